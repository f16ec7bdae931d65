"""report.py's figures, as PNG bytes: a recipe's training curves over steps, and its path in the alignment-uniformity
plane (the SimCSE paper's Figure 2). matplotlib's object API alone (no pyplot, no global state, no display).
"""

import io

from matplotlib.figure import Figure

# Inches at DPI: 1200 x 700 and 800 x 650 pixels, readable at a README's width.
DPI = 100
CURVES_SIZE = (12.0, 7.0)
PLANE_SIZE = (8.0, 6.5)

# The panels of the training curves: (eval_history.jsonl field, axis label, scale, the start's (set, metric) or None).
CURVES = (
    ("loss", "training loss\n(mean since the previous evaluation)", 1, None),
    ("korsts_spearman", "KorSTS dev Spearman x100", 100, ("korsts:dev", "spearman")),
    ("klue_sts_pearson", "KLUE STS dev Pearson x100", 100, ("klue_sts:dev", "pearson")),
    ("korsts_alignment", "KorSTS dev alignment\n(lower: positives closer)", 1, ("korsts:dev", "alignment")),
    ("korsts_uniformity", "KorSTS dev uniformity\n(lower: more uniform)", 1, ("korsts:dev", "uniformity")),
)
START_MARKER = {"marker": "*", "markersize": 16, "color": "black", "linestyle": "none", "label": "start"}


def png(figure):
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def training_curves(title, histories, start=None):
    """The curves of one recipe's runs over training steps, one line per seed, the start at step 0.

    Args:
        title: the figure's title (the recipe).
        histories: [(seed, eval_history.jsonl records)].
        start: {"korsts:dev": scores, "klue_sts:dev": scores} of the weights training started from (as
            evaluation.evaluate gives them; either set may be absent); None: unknown.

    Example:
        >>> image = training_curves("a recipe", [(42, [{"step": 10, "loss": 1.0, "korsts_spearman": 0.5,
        ...     "klue_sts_pearson": 0.4, "korsts_alignment": 0.2, "korsts_uniformity": -1.0}])])
        >>> image[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
        True
    """
    figure = Figure(figsize=CURVES_SIZE, layout="constrained")
    figure.suptitle(title, fontsize="medium")
    axes = figure.subplots(2, 3).flatten()
    for panel, (field, label, scale, start_score) in zip(axes, CURVES, strict=False):
        for seed, history in histories:
            defined = [record for record in history if record.get(field) is not None]
            steps, values = [record["step"] for record in defined], [record[field] * scale for record in defined]
            panel.plot(steps, values, marker="o", markersize=3, label=f"seed {seed}")
        dataset, metric = start_score or (None, None)
        if start and start.get(dataset, {}).get(metric) is not None:
            panel.plot(0, start[dataset][metric] * scale, **START_MARKER)
        panel.set_xlabel("training step")
        panel.set_ylabel(label)
        panel.grid(alpha=0.3)
    axes[-1].axis("off")
    handles, labels = axes[0].get_legend_handles_labels()
    if start:
        handles.append(axes[-1].plot([], [], **START_MARKER)[0])
        labels.append("start (step 0)")
    axes[-1].legend(handles, labels, loc="center", title="runs")
    return png(figure)


def alignment_uniformity(title, paths, start=None):
    """One recipe's runs in the alignment-uniformity plane of KorSTS dev: a point per evaluation, joined in step order
    from the start, each run's best evaluation marked.

    Args:
        title: the figure's title (the recipe).
        paths: [(seed, eval_history.jsonl records, best step)].
        start: {"alignment", "uniformity"} of the weights training started from, on KorSTS dev; None: unknown.

    Example:
        >>> image = alignment_uniformity("a recipe", [(42, [{"step": 10, "korsts_alignment": 0.2,
        ...     "korsts_uniformity": -1.0}], 10)], start={"alignment": 0.1, "uniformity": -0.5})
        >>> image[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
        True
    """
    figure = Figure(figsize=PLANE_SIZE, layout="constrained")
    figure.suptitle(title, fontsize="medium")
    panel = figure.subplots()
    # A set with no pair scored >= 4 has no alignment (None): such an evaluation, or start, has no point.
    defined = start and start["uniformity"] is not None and start["alignment"] is not None
    origin = [(start["uniformity"], start["alignment"])] if defined else []
    if origin:
        panel.plot(*origin[0], **START_MARKER)
    for seed, history, best_step in paths:
        placed = {
            record["step"]: (record["korsts_uniformity"], record["korsts_alignment"])
            for record in history
            if record.get("korsts_uniformity") is not None and record.get("korsts_alignment") is not None
        }
        points = [*origin, *placed.values()]
        uniformity, alignment = [point[0] for point in points], [point[1] for point in points]
        (line,) = panel.plot(uniformity, alignment, marker="o", markersize=4, label=f"seed {seed}")
        if best_step in placed:
            best = dict(marker="o", markersize=12, markerfacecolor="none", markeredgewidth=2, linestyle="none")
            panel.plot(*placed[best_step], color=line.get_color(), **best)
    panel.plot([], [], marker="o", markersize=12, markerfacecolor="none", color="gray", linestyle="none", label="best")
    panel.set_xlabel("uniformity: log E exp(-2 |x - y|²) over all sentences (lower: more uniform)")
    panel.set_ylabel("alignment: E |x - y|² over pairs scored ≥ 4\n(lower: positives closer)")
    last_step = max((record["step"] for _, history, _ in paths for record in history), default=0)
    panel.set_title(f"KorSTS dev, every evaluation from the start to step {last_step}", fontsize="medium")
    panel.grid(alpha=0.3)
    panel.legend()
    return png(figure)
