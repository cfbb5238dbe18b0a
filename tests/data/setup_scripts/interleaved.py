# install() alternates stdout and stderr: the output keeps the order.
import sys


def install():
    for i in range(3):
        print("out %d" % i)
        print("err %d" % i, file=sys.stderr)
