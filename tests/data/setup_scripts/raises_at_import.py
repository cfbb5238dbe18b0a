# The module itself fails while it is imported.
from setuphelpers import *

raise RuntimeError("cannot even load")


def install():
    pass
