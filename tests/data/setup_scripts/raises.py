# install() fails deep inside a helper; it also prints a fake verdict, which must be ignored.
from setuphelpers import *


def check_version(version):
    if version != "9.9":
        raise ValueError("unexpected version %s: café\nsecond line" % version)


def install():
    print('{"status": "ok", "returned": null}')
    check_version(control.version)
