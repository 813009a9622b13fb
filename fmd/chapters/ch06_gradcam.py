"""Chapter 06 (Grad-CAM++ of the ablation models: the paper's Figure 4).

The models are chapter 05's runs (:func:`fmd.chapters.ch05_attention_ablation.default_configs`),
loaded by :func:`fmd.gradcam.load_models`; the maps come from :mod:`fmd.gradcam`. This module
writes the reading of the heat-on-object shares from the numbers the notebook computed.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np


def shares_reading(shares: Mapping[str, np.ndarray], object_area: float) -> str:
    """What the shares of heat on the object say, in Markdown: each model's mean against an even
    spread (``object_area``), and the spread between models against the spread between images."""
    means = {name: float(np.mean(s)) for name, s in shares.items()}
    above = [n for n, m in means.items() if m > object_area]
    between_models = max(means.values()) - min(means.values())
    within = {name: float(np.max(s) - np.min(s)) for name, s in shares.items()}
    widest = max(within, key=within.get)
    images = len(next(iter(shares.values())))
    lines = [f"**Reading the shares** ({images} images). The objects cover {100 * object_area:.0f}% of "
             f"these images, so a map spread evenly would put {object_area:.2f} of its heat on the object.",
             "",
             "* Mean share per model: " + ", ".join(f"{n} {m:.2f}" for n, m in means.items()) + "; "
             + (f"above an even spread: {', '.join(above)}." if above else "none lies above an even spread."),
             f"* The means of the models lie {between_models:.2f} apart; the images of one model spread "
             f"over up to {within[widest]:.2f} ({widest}). "
             + ("The difference between models is smaller than the spread between images, so it ranks "
                "nothing." if between_models < within[widest] else
                "The difference between models exceeds the spread between images of every model.")]
    return "\n".join(lines)
