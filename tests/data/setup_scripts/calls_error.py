# setuphelpers.error() stops the script with WAPT's exception.
from setuphelpers import *


def install():
    error("the licence server is unreachable")
