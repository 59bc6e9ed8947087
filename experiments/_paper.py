"""The paper's ImageNet numbers (arXiv 1906.10973), shown beside ours for reference."""

# Table 1: model -> (clean full, corrected, PGD full, corrected, clean sel., corrected, PGD sel., corrected)
TABLE1 = {
    "VGG-16": (73.48, 69.43, 0.04, 67.47, 94.7, 90.8, 0.0, 71.8),
    "ResNet-50": (76.13, 73.85, 0.00, 72.39, 100.0, 96.5, 0.0, 75.4),
    "DenseNet-121": (74.47, 72.20, 0.01, 88.29, 100.0, 95.3, 0.0, 90.5),
}
# Our backbone -> the paper's row it stands in for.
FAMILY_ROW = {"vgg": "VGG-16", "resnet": "ResNet-50", "densenet": "DenseNet-121"}

# The paper's attacks, in the order of its columns (Tables 2 and 3). The experiments iterate over
# these, not over every registered attack, so registering another attack changes no experiment.
PAPER_ATTACKS = ("pgd", "mim", "deepfool", "cw")

# Table 2 (ResNet-50, selected set): attack -> (clean, clean corrected, adv, adv corrected)
TABLE2 = {
    "pgd": (100.0, 96.5, 0.0, 75.4),
    "mim": (100.0, 96.3, 0.1, 87.8),
    "deepfool": (100.0, 97.0, 0.0, 76.1),
    "cw": (100.0, 82.8, 0.0, 66.8),
}

# Table 3: evaluated attack -> accuracy with correctors trained on (pgd, mim, deepfool, cw)
TABLE3 = {
    "pgd": (75.4, 70.3, 0.0, 4.4),
    "mim": (85.7, 87.8, 0.1, 5.2),
    "deepfool": (54.5, 52.7, 76.1, 73.5),
    "cw": (10.3, 9.1, 19.2, 66.8),
}

# Two-layer vs single-layer corrector, ResNet-50 + PGD, selected set.
ABLATION = {"two-layer": 75.4, "single-layer": 41.9}

# Bhattacharyya coefficients between supporting-class distributions.
BHATTACHARYYA = {
    ("pgd", "mim"): 0.9662,
    ("deepfool", "cw"): 0.9222,
    ("pgd", "deepfool"): 0.9004,
    ("pgd", "cw"): 0.8623,
}
