"""Turn a training run's best checkpoint into the package's shipped weights.

    python scripts/ship_weights.py runs/lite --preset lite [--metrics report/synthetic/results.json]
    python scripts/ship_weights.py runs/bilateral_v2 --preset bilateral --weights last.safetensors \
        --history "stage 2 of 2: ..." [--refinement '{"trim": false}']

Writes ``src/mrvae/nn/weights/mrvae_<preset>.safetensors`` in float16 (the file is half the size)
after checking that float16 weights change the output by less than 1/255 on validation crops,
and a model card ``.json`` beside it: preset, version, training data recipe, steps, validation
metrics, date, licence of the training data, and the refinement settings the engine uses with
it where they differ from the defaults (``mrvae.engine.refine.model_refinement``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import torch

from mrvae import __version__
from mrvae.data.datasets import SyntheticPairs
from mrvae.engine.refine import model_refinement
from mrvae.nn.model import from_pretrained, save_pretrained, shipped_weights

SYNTHETIC_DATA = ("synthetic pairs made from the clean photos in ../shared/data/clean (BSDS500 via "
                  "CBSD68/CBSD432, Urban100, Sun-Hays 80, PolyU, McMaster, Set5/Set14; see "
                  "SOURCES.md)")
REAL_PAIRS = ("real low/normal-light pairs of LOL (Wei et al., BMVC 2018; research use only): the "
              "training split of the pairs in ../shared/data/paired/LOL "
              "(mrvae.data.datasets.pair_split_of; the validation split and LOL's evaluation "
              "pairs were never trained on)")


def licence(card: dict) -> str:
    """What the weights were trained on, and so the terms they inherit."""
    paired = any(s.get("kind") == "paired" for s in card["data"].get("sources", []))
    data = f"{REAL_PAIRS} and {SYNTHETIC_DATA}" if paired else SYNTHETIC_DATA
    return (f"Trained on {data}; several sets allow non-commercial research use only, "
            "so do the weights.")


def max_fp16_difference(model: torch.nn.Module, crops: torch.Tensor) -> float:
    """Largest output change, over ``crops (B, 3, H, W)``, from rounding weights to float16."""
    reference = model(crops).detail
    rounded = {k: v.half().float() if v.is_floating_point() else v
               for k, v in model.state_dict().items()}
    original = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(rounded)
    try:
        return float((model(crops).detail - reference).abs().max())
    finally:
        model.load_state_dict(original)


def summary(results_path: Path) -> dict:
    """The MR-VAE rows of an ``mrvae eval`` results.json, with the test set they were scored on."""
    results = json.loads(results_path.read_text())
    return {"data": results["data"]["source"], "recipe": results["data"].get("recipe"),
            "images": results["data"]["images"],
            "methods": {name: row for name, row in results["methods"].items()
                        if name.startswith("mrvae")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--preset", default="lite")
    parser.add_argument("--metrics", type=Path, nargs="*", default=[],
                        help="results.json files of `mrvae eval` to record in the card")
    parser.add_argument("--weights", default="best.safetensors",
                        help="the weights file of run_dir to ship")
    parser.add_argument("--history", default="",
                        help="how the run started (earlier stages), recorded in the card")
    parser.add_argument("--refinement", type=json.loads, default={},
                        help='the engine\'s refinement settings this model was validated with, '
                             'as JSON (\'{"trim": false}\'): the card\'s "refinement"')
    args = parser.parse_args()

    source = args.run_dir / args.weights
    model = from_pretrained(source)
    card = model.card  # type: ignore[attr-defined]
    val = SyntheticPairs(card["data"]["roots"], crop=256, split="val", augment=False,
                         degrade=card["data"]["degrade"])
    crops = torch.stack([val[i]["low"] for i in range(min(8, len(val)))])
    with torch.inference_mode():
        diff = max_fp16_difference(model, crops)
    half = diff < 1 / 255
    print(f"float16 weights change the output by at most {diff * 255:.3f}/255: "
          f"shipping {'float16' if half else 'float32'}")
    shipped = {
        "name": f"mrvae_{args.preset}",
        "preset": args.preset,
        "version": f"{__version__}+{dt.date.today():%Y%m%d}",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "steps": card["step"],
        "history": args.history,
        "validation": {k: v for k, v in card.items() if k.startswith("val_")},
        "data": {**card["data"], "roots": ["../shared/data/clean"]},
        "train_config": {**card["train_config"], "run_dir": None,
                         "data": {**card["train_config"]["data"],
                                  "roots": ["../shared/data/clean"]}},
        "storage": "float16" if half else "float32",
        "fp16_max_abs_diff": diff,
        "evaluation": [summary(p) for p in args.metrics],
        "licence": licence(card),
    }
    if args.refinement:
        model_refinement({"refinement": args.refinement})  # refuses unknown settings
        shipped["refinement"] = args.refinement
    path = save_pretrained(model, shipped_weights(args.preset), shipped, half=half)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {path.with_suffix('.json')}")


if __name__ == "__main__":
    main()
