"""`training.backbone: auto`: frozen pre-trained features where weights can be loaded, else the small CNN.

On a student's folder (a few hundred images, a few dozen `sain`), a network trained from scratch
barely beats chance; features learnt on many chest X-rays (or, failing that, on ImageNet) need no
training at all. `auto` takes the first source whose weights are on this machine or can be
downloaded, in `PREFERENCE` order: torchxrayvision's DenseNets trained on CheXpert, then on
MIMIC-CXR (never its NIH or "all" weights: the evaluation images come from NIH), then torchvision's
ImageNet DenseNet-121 and ResNet-18. Without any, it trains the small CNN and says why in one line.

The choice is made before the study's cache key, from what is on disk (no torch import when a weights
file is there); a download is attempted at most once an hour when none is. `resolve` returns the config
with the chosen backbone, so every cache key and every text reads the backbone actually used.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline import progress
from pipeline.cache import cache_dir
from pipeline.config import StudyConfig, TrainingConfig

AUTO = "auto"
FALLBACK = "small_cnn"


@dataclass(frozen=True)
class Source:
    backbone: str  # a name of `model.backbones`
    weights_fr: str  # what the weights were trained on, for the report
    file_glob: str  # the weights file's name in its library's cache folder
    package: str  # the library that loads it


PREFERENCE = (
    Source("xrv_densenet121_chex", "radiographies CheXpert (torchxrayvision)", "*chex*", "torchxrayvision"),
    Source("xrv_densenet121_mimic", "radiographies MIMIC-CXR (torchxrayvision)", "*mimic_nb*", "torchxrayvision"),
    Source("densenet121", "images naturelles ImageNet (torchvision)", "densenet121-*.pth", "torchvision"),
    Source("resnet18", "images naturelles ImageNet (torchvision)", "resnet18-*.pth", "torchvision"),
)
RETRY_SECONDS = 3600  # a failed download is not retried before this


@dataclass(frozen=True)
class BackboneChoice:
    """What `auto` chose and why; `tried` lists (backbone, why it was not used) before the choice."""

    requested: str
    backbone: str
    feature_source: str
    weights_fr: str = ""
    tried: tuple[tuple[str, str], ...] = ()

    @property
    def fell_back(self) -> bool:
        return self.requested == AUTO and self.backbone == FALLBACK

    def line(self) -> str:
        """One English line for the progress log."""
        if self.requested != AUTO:
            return f"backbone: {self.backbone} (set in study.yml)"
        if not self.fell_back:
            return f"backbone auto: frozen pre-trained {self.backbone} features ({self.weights_fr})"
        why = "; ".join(f"{name}: {reason}" for name, reason in self.tried) or "no pre-trained source"
        return (f"backbone auto: no pre-trained weights could be loaded ({why}); training the small CNN from scratch "
                "instead, much weaker on a small folder. With internet access they are downloaded on a later run "
                f"(a failed download is retried after {RETRY_SECONDS // 60} minutes); `pip install torchxrayvision` "
                "adds the chest X-ray weights.")

    def sentence_fr(self) -> str:
        """One French sentence for the report's protocol: what was used and why."""
        if self.requested != AUTO:
            return ""
        if not self.fell_back:
            return (f"Le réseau est choisi automatiquement (`training.backbone: auto`) : caractéristiques figées d'un "
                    f"{self.backbone} pré-entraîné sur des {self.weights_fr}, sans apprentissage sur nos images.")
        return ("Le réseau est choisi automatiquement (`training.backbone: auto`) : aucun poids pré-entraîné n'a pu "
                "être chargé sur cette machine (pas de connexion, ou `torchxrayvision` absent), nous entraînons donc "
                "le petit réseau convolutif depuis zéro, beaucoup plus faible sur quelques centaines d'images.")


def _torch_hub_checkpoints() -> Path:
    """torch.hub's cache folder, found as torch finds it, without importing torch."""
    hub = os.environ.get("TORCH_HOME")
    base = Path(hub) if hub else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torch"
    return base / "hub" / "checkpoints"


def _xrv_cache() -> Path:
    return Path(os.environ.get("XRV_CACHE_DIR", Path.home() / ".torchxrayvision")) / "models_data"


def _folder(source: Source) -> Path:
    return _xrv_cache() if source.package == "torchxrayvision" else _torch_hub_checkpoints()


def _missing(source: Source) -> str:
    """Why `source` cannot be used from disk now ("" when its package and weights file are there)."""
    if importlib.util.find_spec(source.package) is None:
        return f"`{source.package}` not installed"
    if not any(_folder(source).glob(source.file_glob)):
        return f"no weights in {_folder(source)}"
    return ""


def _probe_file() -> Path:
    return cache_dir() / "weights-probe.json"


def _try_download(source: Source) -> str:
    """Load `source` with its weights, downloading them if needed: "" on success, else why not."""
    from pipeline.model.backbones import WeightsUnavailable, load_pretrained

    try:
        load_pretrained(source.backbone)
    except (WeightsUnavailable, ValueError) as err:
        return str(err).splitlines()[0].removeprefix(f"{source.backbone}: ")[:200]
    return ""


def choose(training: TrainingConfig, download: bool = True) -> BackboneChoice:
    """The backbone `training` asks for; with `auto`, the first `PREFERENCE` source usable here."""
    if training.backbone != AUTO:
        return BackboneChoice(training.backbone, training.backbone, training.feature_source)
    if training.mode == "full":
        return BackboneChoice(AUTO, FALLBACK, "erm", tried=(("pre-trained", "full mode trains every network"),))
    tried = []
    for source in PREFERENCE:
        why = _missing(source)
        if not why:
            return BackboneChoice(AUTO, source.backbone, "pretrained", source.weights_fr, tuple(tried))
        tried.append((source.backbone, why))
    if download and importlib.util.find_spec("torch") is not None:
        probe = _probe_file()
        recent = probe.is_file() and time.time() - json.loads(probe.read_text())["time"] < RETRY_SECONDS
        if not recent:
            tried = []
            for source in PREFERENCE:
                why = _missing(source) if importlib.util.find_spec(source.package) is None else _try_download(source)
                if not why:
                    return BackboneChoice(AUTO, source.backbone, "pretrained", source.weights_fr, tuple(tried))
                tried.append((source.backbone, why))
            probe.parent.mkdir(parents=True, exist_ok=True)
            probe.write_text(json.dumps({"time": time.time(), "tried": tried}))
        else:
            tried = [tuple(t) for t in json.loads(probe.read_text())["tried"]]
    return BackboneChoice(AUTO, FALLBACK, "erm", tried=tuple(tried))


def resolve(config: StudyConfig, download: bool = True) -> tuple[StudyConfig, BackboneChoice]:
    """`config` with `training.backbone` (and `feature_source`) as chosen, and the choice."""
    choice = choose(config.training, download)
    training = dataclasses.replace(config.training, backbone=choice.backbone, feature_source=choice.feature_source)
    return dataclasses.replace(config, training=training), choice


def announce(choice: BackboneChoice) -> None:
    """The one line that says which backbone the study uses (and, for a fallback, why)."""
    if choice.requested == AUTO:
        progress.note(choice.line())
