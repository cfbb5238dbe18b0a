# Python 2 syntax, as old WAPT packages have.
from setuphelpers import *


def install():
    print "installing"
