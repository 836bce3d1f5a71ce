"""What is true about hardware: named target profiles and detection of this machine."""

from profiles.hardware import CPU, Device, Hardware, Host

__all__ = ["CPU", "Device", "Hardware", "Host"]
