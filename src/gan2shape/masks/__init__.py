"""Official semantic parsers (BiSeNet faces, PSPNet-50 VOC/ADE20K) and the per-category mask and
confidence pipelines of real images (METHOD §7, EXTENSIONS §1.1)."""

from .bisenet import BiSeNet
from .parsing import (CATEGORIES, SPECS, ParserSpec, add_cli, class_probabilities, confidence_map,
                    label_map_to_mask, load_parser, logits_to_labels, parse)
from .pspnet import PSPNet

__all__ = ["BiSeNet", "PSPNet", "load_parser", "parse", "CATEGORIES", "SPECS", "ParserSpec", "add_cli",
           "label_map_to_mask", "logits_to_labels", "confidence_map", "class_probabilities"]
