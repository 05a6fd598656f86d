"""Gekko forecasting: NHITS / NBEATSx in PyTorch, trained, evaluated and exported to ONNX.

Runtime-safe modules (numpy only, importable without torch): ``features``, ``scaling``,
``data``, ``evaluate`` (baselines and metrics), ``registry``; plus ``serving``/``windows``/
``drift`` (onnxruntime). Training-only modules import torch: ``net``, ``nhits``, ``nbeatsx``,
``train``, ``export``. Nothing here imports ``engine``, ``procs`` or ``ops``.
"""
