# A Windows package run on Linux: the helper says so clearly.
from setuphelpers import *


def install():
    install_msi_if_needed("tool.msi", killbefore=["tool.exe"])
