# install() prints about 3 MiB, then a last line.
import sys


def install():
    line = "x" * 1023 + "\n"
    for _ in range(3 * 1024):
        sys.stdout.write(line)
    print("THE END")
