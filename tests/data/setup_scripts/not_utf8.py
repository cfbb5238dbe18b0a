# install() prints bytes that are not UTF-8, between valid text.
import sys


def install():
    print("before é")
    sys.stdout.buffer.write(b"caf\xe9 \xff\xfe\x80\n")
    sys.stdout.buffer.flush()
    print("after")
