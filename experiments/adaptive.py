"""Adaptive evaluation: logit correction against an attacker who knows the corrector.

Command::

    python -m experiments.adaptive                    # writes runs/adaptive-fashion_mnist/
    python -m experiments.adaptive --dataset imagenet --data-dir TFDS_DIR --weights-dir CONVERTED

For each attack of Table 2 (ResNet backbone, selected set, the corrector trained on that
attack): accuracy without defense, with correction under the paper's *oblivious* attack (on the
backbone alone), and with correction under the adaptive attacks on ``g∘f`` (``jaxlogit.adaptive``:
PGD with cross-entropy and with the C&W margin, logit matching; L-inf eps 16/255, 100 steps,
3 random restarts, step 2/255), each and in the worst case (a sample is robust only if every
attack, the oblivious one included, fails). Beside it: ROC AUC of the corrector as a detector.
Then the sanity checks (accuracy never rises with more steps, eps = 1 drives it to ~0, the
adaptive attacks are at least as strong as the oblivious one) and accuracy vs eps (PGD).

Expected on the default: the oblivious numbers of Table 2; under the adaptive attacks the
corrected accuracy falls far below them (the corrector sees only logits, and an attacker who
knows it can choose the logits).
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import click
import numpy as np

from experiments import _common, _paper
from jaxlogit import adaptive, pipeline
from jaxlogit.errors import JaxlogitError

EPS_SWEEP = (2 / 255, 4 / 255, 8 / 255, 16 / 255)
STEP_BUDGETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 300)
COLUMNS = (adaptive.OBLIVIOUS, *adaptive.ADAPTIVE_ATTACKS, adaptive.WORST)


@dataclasses.dataclass(frozen=True)
class Config:
    """What the experiment runs.

    Attributes:
      attack: settings of the adaptive L-inf attacks (eps, steps, restarts, ...).
      eps_sweep: radii of the accuracy-vs-eps plot (PGD row).
      sweep_restarts: restarts of the adaptive attacks below ``attack.eps`` (the plot's cost is
        the samples that survive all steps, many at small eps).
      unbounded_eps: the radius of the "unbounded" sanity check (1.0 = any image).
      unbounded_images: selected images it runs on.
      attacks: the rows: attacks whose correctors are attacked (pgd among them: the sweep and the
        unbounded check attack its corrector).
    """

    attack: adaptive.AdaptiveConfig = adaptive.AdaptiveConfig()
    eps_sweep: tuple[float, ...] = EPS_SWEEP
    sweep_restarts: int = 1
    unbounded_eps: float = 1.0
    unbounded_images: int = 200
    attacks: tuple[str, ...] = _paper.PAPER_ATTACKS


@dataclasses.dataclass(frozen=True)
class Images:
    """The selected evaluation images and the backbone."""

    backbone: object
    ids: np.ndarray
    x: np.ndarray
    y: np.ndarray


def load_images(setup: _common.Setup) -> Images:
    """The ResNet backbone and the selected set's images (N, H, W, C), labels (N,), indices (N,).

    Raises:
      JaxlogitError: the selected set holds fewer than two classes (logit matching pulls each
        image to one of another class).
    """
    backbone = _common.load_backbone(setup, setup.resnet)
    ids = _common.selected_indices(setup)
    x, y = _common.load_split(setup, setup.test_split_name).get_batch(ids)
    classes = np.unique(y).size
    if classes < 2:
        raise JaxlogitError(
            f"the selected set holds {len(y)} image(s) of {classes} class(es) but the adaptive evaluation "
            "needs at least two classes (logit matching): select images of more classes (raise "
            "--test-limit or --per-class, or list them with --selected FILE)"
        )
    return Images(backbone, ids, x, y)


def evaluate_attack(
    setup: _common.Setup,
    images: Images,
    attack: pipeline.AttackConfig,
    trained: pipeline.TrainedCorrector,
    config: adaptive.AdaptiveConfig,
    names=adaptive.ADAPTIVE_ATTACKS,
) -> adaptive.Evaluation:
    """Oblivious ``attack`` (from the logit store) plus the adaptive attacks on ``g∘f``."""
    rows = _common.selected_logits(setup, images.backbone, attack)
    if not np.array_equal(np.asarray(rows["labels"]), images.y):
        raise JaxlogitError(
            "the cached selected-set logits do not match the selected images: delete the cache's "
            "selected/ and logits/ folders of this backbone and rerun"
        )
    g = adaptive.corrector_fn(trained.module, trained.params)
    return adaptive.evaluate(
        images.backbone.logits_fn(),
        g,
        images.x,
        images.y,
        config=config,
        oblivious_logits=np.asarray(rows["adv_logits"]),
        names=names,
        ids=images.ids,
    )


def attack_row(setup: _common.Setup, images: Images, name: str, config: Config) -> dict:
    """Accuracies, detection and the step curve of attack ``name``'s corrector."""
    start = time.perf_counter()
    attack = pipeline.AttackConfig(name)
    trained = _common.corrector_for(setup, images.backbone, attack)
    ev = evaluate_attack(setup, images, attack, trained, config.attack)
    budgets = [b for b in STEP_BUDGETS if b <= ev.budget] + [ev.budget]
    return {
        "attack": name,
        "accuracy": adaptive.accuracies(ev),
        "detection": adaptive.detection(ev),
        "steps_curve": adaptive.steps_curve(ev, sorted(set(budgets))),
        "seconds": round(time.perf_counter() - start, 1),
    }


def eps_sweep(setup: _common.Setup, images: Images, config: Config, at_16: dict) -> list[dict]:
    """PGD row at each radius of ``config.eps_sweep``: no defense, oblivious, adaptive worst case."""
    trained = _common.corrector_for(setup, images.backbone, pipeline.AttackConfig("pgd"))
    out = []
    for eps in config.eps_sweep:
        if np.isclose(eps, config.attack.eps):
            acc = at_16
        else:
            attack_config = dataclasses.replace(config.attack, eps=eps, restarts=config.sweep_restarts)
            ev = evaluate_attack(setup, images, pipeline.AttackConfig("pgd", eps=eps), trained, attack_config)
            acc = adaptive.accuracies(ev)
        out.append(
            {
                "eps": eps,
                "eps_255": round(eps * 255, 2),
                **{
                    k: acc[k]
                    for k in ("no_defense", adaptive.OBLIVIOUS, adaptive.ADAPTIVE_WORST, adaptive.WORST)
                },
            }
        )
    return out


def unbounded_check(setup: _common.Setup, images: Images, config: Config) -> dict:
    """Adaptive PGD (cross-entropy, one restart) at ``unbounded_eps`` on the PGD corrector."""
    n = min(config.unbounded_images, len(images.y))
    subset = Images(images.backbone, images.ids[:n], images.x[:n], images.y[:n])
    trained = _common.corrector_for(setup, images.backbone, pipeline.AttackConfig("pgd"))
    attack_config = dataclasses.replace(config.attack, eps=config.unbounded_eps, restarts=1)
    g = adaptive.corrector_fn(trained.module, trained.params)
    ev = adaptive.evaluate(
        subset.backbone.logits_fn(),
        g,
        subset.x,
        subset.y,
        config=attack_config,
        names=("pgd_ce",),
        ids=subset.ids,
    )
    return {"eps": config.unbounded_eps, "images": n, "accuracy": adaptive.accuracies(ev)["pgd_ce"]}


def sanity(rows: list[dict], unbounded: dict) -> dict:
    """The three checks of the evaluation literature, each with its verdict."""
    monotone = all(np.all(np.diff(list(r["steps_curve"].values())) <= 0) for r in rows)
    return {
        "more_steps_never_raise_accuracy": bool(monotone),
        "unbounded_accuracy": unbounded["accuracy"],
        "unbounded_drives_accuracy_to_zero": bool(unbounded["accuracy"] <= 1.0),
        "worst_case_at_most_oblivious": all(
            r["accuracy"][adaptive.WORST] <= r["accuracy"][adaptive.OBLIVIOUS] for r in rows
        ),
        "adaptive_alone_at_most_oblivious": all(
            r["accuracy"][adaptive.ADAPTIVE_WORST] <= r["accuracy"][adaptive.OBLIVIOUS] for r in rows
        ),
    }


def plot_sweep(sweep: list[dict], title: str):
    """Accuracy (%) vs eps (x 255): no defense, corrected under oblivious and adaptive PGD."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    eps = [s["eps_255"] for s in sweep]
    for key, label, style in (
        ("no_defense", "no defense (oblivious PGD)", "k:o"),
        (adaptive.OBLIVIOUS, "corrected, oblivious PGD (paper)", "C0-o"),
        (adaptive.WORST, "corrected, adaptive (worst case)", "C3-s"),
    ):
        ax.plot(eps, [s[key] for s in sweep], style, label=label)
    ax.set(xlabel="eps (x 1/255, L-inf)", ylabel="accuracy (%)", ylim=(-2, 102), xticks=eps, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def accuracy_table(rows: list[dict]) -> str:
    """Accuracy per attack row: no defense, corrected under each attack and the worst case, AUCs."""
    header = [
        "attack",
        "no defense",
        "corrected: oblivious (paper)",
        "adaptive PGD-CE",
        "adaptive PGD-margin",
        "logit matching",
        "worst case",
        "detection AUC oblivious",
        "detection AUC worst case",
    ]
    body = [
        [
            r["attack"],
            _common.percent_cell(r["accuracy"]["no_defense"], r["n"]),
            *(_common.percent_cell(r["accuracy"][c], r["n"]) for c in COLUMNS),
            r["detection"][adaptive.OBLIVIOUS]["auc"],
            r["detection"][adaptive.WORST]["auc"],
        ]
        for r in rows
    ]
    return _common.markdown_table(header, body)


def detection_table(rows: list[dict]) -> str:
    """ROC AUC and flag rate per attack row and attack, with the clean false-flag rate."""
    header = ["attack", "clean flagged %", *(f"{c} AUC / flagged %" for c in COLUMNS)]
    body = [
        [
            r["attack"],
            r["detection"]["clean"]["flagged"],
            *(f"{r['detection'][c]['auc']:.3f} / {r['detection'][c]['flagged']:.1f}" for c in COLUMNS),
        ]
        for r in rows
    ]
    return _common.markdown_table(header, body)


def curve_table(rows: list[dict]) -> str:
    """Worst-case accuracy after s gradient steps per adaptive attack, per attack row."""
    budgets = list(rows[0]["steps_curve"])
    return _common.markdown_table(
        ["attack", *(f"s={b}" for b in budgets)],
        [[r["attack"], *(_common.percent_cell(v, r["n"]) for v in r["steps_curve"].values())] for r in rows],
    )


def sweep_table(sweep: list[dict], n: int) -> str:
    """PGD row: accuracy per eps (``n`` images), with Wilson 95% intervals."""
    keys = ("no_defense", adaptive.OBLIVIOUS, adaptive.ADAPTIVE_WORST, adaptive.WORST)
    body = [[f"{s['eps_255']:g}/255", *(_common.percent_cell(s[k], n) for k in keys)] for s in sweep]
    return _common.markdown_table(
        ["eps", "no defense", "corrected: oblivious", "adaptive only", "worst case"], body
    )


def markdown(setup: _common.Setup, config: Config, rows, sweep, unbounded, checks) -> str:
    """The report."""
    a = config.attack
    return "\n\n".join(
        [
            f"## Adaptive evaluation — {setup.dataset}, {setup.resnet}, selected set ({rows[0]['n']} "
            "images): accuracy (%)",
            f"Adaptive attacks on g∘f: L-inf eps {a.eps * 255:g}/255, {a.steps} steps x {a.restarts} "
            "restarts, "
            f"step {a.step * 255:g}/255. Worst case: robust only if every attack (oblivious included) fails.",
            accuracy_table(rows),
            "### Detection: score = p_f(k) - p_g(k), k = backbone's class; ROC AUC clean vs adversarial, "
            "and % flagged "
            "(the corrector changes the prediction)",
            detection_table(rows),
            "### Sanity checks",
            _common.markdown_table(["check", "result"], [[name, value] for name, value in checks.items()]),
            f"Unbounded: adaptive PGD-CE at eps={unbounded['eps']:g} on {unbounded['images']} images, PGD "
            "corrector.",
            "### Worst-case accuracy (%) after s gradient steps per adaptive attack",
            curve_table(rows),
            f"### PGD: accuracy (%) vs eps (adaptive: {config.sweep_restarts} restart(s) below "
            f"{a.eps * 255:g}/255)",
            sweep_table(sweep, rows[0]["n"]),
            "Brackets: Wilson 95% intervals over the images.",
        ]
    )


def run(setup: _common.Setup, out_dir: pathlib.Path, config: Config = Config()) -> str:
    """Runs the adaptive evaluation (cached logits and correctors), prints and writes the report.

    The adaptive attacks run ``setup.adaptive_batch`` images at a time (``--adaptive-batch``), not
    ``config.attack.batch_size`` (their results do not depend on it).
    """
    start = time.perf_counter()
    config = dataclasses.replace(
        config, attack=dataclasses.replace(config.attack, batch_size=setup.adaptive_batch)
    )
    images = load_images(setup)
    rows = [{**attack_row(setup, images, name, config), "n": int(len(images.y))} for name in config.attacks]
    pgd_row = next(r for r in rows if r["attack"] == "pgd")
    sweep = eps_sweep(setup, images, config, pgd_row["accuracy"])
    unbounded = unbounded_check(setup, images, config)
    checks = sanity(rows, unbounded)
    text = markdown(setup, config, rows, sweep, unbounded, checks)
    print(text)
    payload = {
        "setup": dataclasses.asdict(setup),
        "config": dataclasses.asdict(config),
        "rows": rows,
        "eps_sweep": sweep,
        "unbounded": unbounded,
        "sanity": checks,
        "seconds": round(time.perf_counter() - start, 1),
    }
    figure = plot_sweep(sweep, f"{setup.dataset}, {setup.resnet}: PGD, oblivious vs adaptive")
    _common.write_report(out_dir, "adaptive", text, payload, {"adaptive_eps.png": figure})
    return text


def configure(steps: int, restarts: int, eps_sweep: str, attacks: str) -> dict:
    """``run``'s config from the command's ``--steps``, ``--restarts``, ``--eps-sweep`` and ``--attacks``.

    Raises:
      JaxlogitError: an ``--eps-sweep`` entry that is not a number in (0, 255], or ``--attacks``
        naming another attack than the paper's or leaving out pgd.
    """
    rows = tuple(a.strip() for a in attacks.split(","))
    if "pgd" not in rows or not set(rows) <= set(_paper.PAPER_ATTACKS) or len(set(rows)) < len(rows):
        raise JaxlogitError(
            f"--attacks {attacks!r}: list some of {','.join(_paper.PAPER_ATTACKS)} once each, pgd among "
            "them (the sweep attacks its corrector)"
        )
    try:
        sweep = tuple(float(v) / 255 for v in eps_sweep.split(","))
    except ValueError:
        sweep = ()
    if not sweep or not all(0 < e <= 1 for e in sweep):
        raise JaxlogitError(f"--eps-sweep {eps_sweep!r}: list radii x 255 in (0, 255], e.g. 2,4,8,16")
    attack = dataclasses.replace(Config.attack, steps=steps, restarts=restarts)
    return {"config": Config(attack=attack, eps_sweep=sweep, attacks=rows)}


OPTIONS = (
    click.option(
        "--steps",
        type=click.IntRange(min=1),
        default=Config.attack.steps,
        show_default=True,
        help="Steps per restart of the adaptive attacks.",
    ),
    click.option(
        "--restarts",
        type=click.IntRange(min=1),
        default=Config.attack.restarts,
        show_default=True,
        help="Random restarts of the adaptive attacks (the sweep below 16/255 runs one).",
    ),
    click.option(
        "--eps-sweep",
        default=",".join(f"{e * 255:g}" for e in EPS_SWEEP),
        show_default=True,
        metavar="E,E,...",
        help="Radii (x 1/255) of the accuracy-vs-eps plot; each other than 16 attacks the selected set anew.",
    ),
    click.option(
        "--attacks",
        default=",".join(_paper.PAPER_ATTACKS),
        show_default=True,
        metavar="A,B,...",
        help="The rows: the oblivious attacks whose correctors are attacked (pgd among them).",
    ),
)
main = _common.cli_main("adaptive", run, __doc__.split("\n\n")[0], OPTIONS, configure)

if __name__ == "__main__":
    main()
