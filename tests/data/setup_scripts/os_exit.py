# os._exit(0) ends the interpreter before the bootstrap can report anything.
import os


def install():
    print("vanishing")
    os._exit(0)
