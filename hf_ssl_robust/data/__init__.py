"""Datasets: registry of specs, paired transforms, loading into the unified batch form.

``synthetic`` (ShapesWorld) is imported lazily by the loaders, so this package imports on its own.
"""


from .._lazy import lazy_getattr
from .registry import DATASETS, TARGET_KEYS, TASKS, DatasetSpec, get_dataset_spec, register_dataset

# Everything else loads on first use (PEP 562): the registry alone is torch-free, so the command line
# checks dataset names without importing torch.
_LAZY = {
    **dict.fromkeys(("DEFAULT_SHAPES_SAMPLES", "DatasetUnavailableError", "ShapesTensorDataset", "UnifiedDataset", "check_columns",
                     "collate", "load_split", "make_dataloader", "make_dataset", "subset_indices", "to_unified"), ".loading"),
    **dict.fromkeys(("IndexedDataset", "resolve_num_workers"), ".loaders"),
    **dict.fromkeys(("CenterCrop", "Compose", "PadToMultiple", "RandomCrop", "RandomHorizontalFlip", "RandomResizedCrop",
                     "RandomVerticalFlip", "Resize", "eval_transform", "train_transform"), ".transforms"),
}


__getattr__ = lazy_getattr(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "DATASETS",
    "DEFAULT_SHAPES_SAMPLES",
    "TARGET_KEYS",
    "TASKS",
    "CenterCrop",
    "Compose",
    "DatasetSpec",
    "DatasetUnavailableError",
    "IndexedDataset",
    "PadToMultiple",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomVerticalFlip",
    "Resize",
    "ShapesTensorDataset",
    "UnifiedDataset",
    "check_columns",
    "collate",
    "eval_transform",
    "get_dataset_spec",
    "load_split",
    "make_dataloader",
    "make_dataset",
    "resolve_num_workers",
    "register_dataset",
    "subset_indices",
    "to_unified",
    "train_transform",
]
