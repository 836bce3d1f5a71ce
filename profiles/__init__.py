"""What is true about hardware: named target profiles and detection of this machine.

``profiles`` imports nothing of ours; detection is loaded lazily (``profiles.detect``).
"""

from profiles.errors import InvalidTargetError, ProfileError, TargetExistsError, UnknownTargetError
from profiles.hardware import CPU, Device, Hardware, Host
from profiles.targets import list_targets, load_target, save_target, target_for_hardware_id

__all__ = [
    "CPU", "Device", "Hardware", "Host",
    "ProfileError", "UnknownTargetError", "InvalidTargetError", "TargetExistsError",
    "load_target", "list_targets", "save_target", "target_for_hardware_id",
    "detect", "detect_hardware", "DetectReport",
]


def __getattr__(name):
    # detection pulls in psutil and the source modules: only when asked for
    if name in ("detect", "detect_hardware", "DetectReport"):
        from profiles import detect as _detect_module

        return getattr(_detect_module, name)
    raise AttributeError(f"module 'profiles' has no attribute {name!r}")
