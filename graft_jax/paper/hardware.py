"""Accelerator presets for the dry run: memory per device and peak dense bf16 FLOP/s.

Memory is what the device has (GiB); on GPUs XLA preallocates 75% of it unless
XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise, and a dry run on real devices uses the backend's
own `bytes_limit` instead. Peak FLOP/s are the vendors' dense bf16 numbers.
"""
from __future__ import annotations

import dataclasses

import jax

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Device:
  name: str
  memory_gib: float
  peak_tflops: float


DEVICES: dict[str, Device] = {d.name: d for d in (
    Device("a100-80gb", 80.0, 312.0),
    Device("h100-80gb", 79.6, 989.0),
    Device("h200", 140.4, 989.0),
    Device("tpu-v4", 32.0, 275.0),
    Device("tpu-v5e", 16.0, 197.0),
    Device("tpu-v5p", 95.0, 459.0),
    Device("tpu-v6e", 32.0, 918.0),
)}

# jax's device_kind -> preset (first substring that matches, lower-cased).
_KINDS = (("tpu v5 lite", "tpu-v5e"), ("tpu v5e", "tpu-v5e"), ("tpu v5p", "tpu-v5p"), ("tpu v5", "tpu-v5p"),
          ("tpu v6 lite", "tpu-v6e"), ("tpu v6e", "tpu-v6e"), ("tpu v4", "tpu-v4"), ("h200", "h200"),
          ("h100", "h100-80gb"), ("a100", "a100-80gb"))
CPU_DEFAULT = "h100-80gb"


def detect(devices=None) -> tuple[Device, str]:
  """(preset of the devices jax sees, how it was chosen). Simulated CPU devices get CPU_DEFAULT;
  real devices with a `bytes_limit` get that as their memory."""
  device = (devices or jax.devices())[0]
  if device.platform == "cpu":
    return DEVICES[CPU_DEFAULT], f"simulated {device.platform} devices: assuming {CPU_DEFAULT}"
  kind = device.device_kind.lower()
  name = next((preset for key, preset in _KINDS if key in kind), None)
  base = DEVICES[name] if name else Device(kind, 0.0, 0.0)
  try:
    stats = device.memory_stats() or {}
  except Exception:  # pylint: disable=broad-except  # e.g. a deviceless (compile-only) TPU topology
    stats = {}
  if stats.get("bytes_limit"):
    base = dataclasses.replace(base, memory_gib=stats["bytes_limit"] / GIB)
  return base, f"detected {device.device_kind!r}"


def resolve(hardware_cfg, devices=None) -> tuple[Device, str]:
  """The device of a config's `hardware` block: a preset or "auto", with the memory and peak
  overrides applied. Raises ValueError for an unknown preset or a device with unknown numbers."""
  name = hardware_cfg.device
  if name == "auto":
    device, how = detect(devices)
  elif name in DEVICES:
    device, how = DEVICES[name], f"preset {name}"
  else:
    raise ValueError(f"Unknown hardware.device {name!r}; choose 'auto' or one of {sorted(DEVICES)}")
  if hardware_cfg.memory_gib:
    device = dataclasses.replace(device, memory_gib=float(hardware_cfg.memory_gib))
  if hardware_cfg.peak_tflops:
    device = dataclasses.replace(device, peak_tflops=float(hardware_cfg.peak_tflops))
  if device.memory_gib <= 0 or device.peak_tflops <= 0:
    raise ValueError(f"No memory / peak FLOP/s known for device {device.name!r}; set "
                     "--config.hardware.memory_gib and --config.hardware.peak_tflops")
  return device, how
