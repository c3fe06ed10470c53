"""Forecast-MAE (ICCV 2023): agent-centric transformer backbone; see :mod:`.model` and :mod:`.adapter`."""

from smartpretrain.backbones.forecast_mae.adapter import ForecastMAEAdapter, ForecastMAEBatch
from smartpretrain.backbones.forecast_mae.model import ForecastMAE

__all__ = ["ForecastMAE", "ForecastMAEAdapter", "ForecastMAEBatch"]
