"""Custom Kedro datasets of facescan (``type: facescan.datasets.<Name>`` in the catalog)."""

from facescan.datasets.image_cache import ImageCacheDataset as ImageCacheDataset
from facescan.datasets.report_history import ReportHistoryDataset as ReportHistoryDataset
from facescan.datasets.torch_checkpoint import TorchCheckpointDataset as TorchCheckpointDataset
