# Records what the script sees: globals, environment, working directory, sys.path, stdin.
from setuphelpers import *
import json
import os
import sys

SEEN_AT_IMPORT = {"package": control.package, "basedir": basedir}


def install():
    report = {
        "at_import": SEEN_AT_IMPORT,
        "control_package": control.package,
        "control_version": control["version"],
        "control_name": control.name,
        "control_installed_size": control.installed_size,
        "control_missing_known": control.maintainer,
        "control_requirement": control.asrequirement(),
        "basedir": basedir,
        "persistent_dir": persistent_dir,
        "persistent_source_dir": persistent_source_dir,
        "params": params,
        "module_name": __name__,
        "cwd": os.getcwd(),
        "environ": dict(os.environ),
        "isolated": sys.flags.isolated,
        "stdin": sys.stdin.read(),
        "sys_path_head": sys.path[:2],
        "stdout_encoding": sys.stdout.encoding,
    }
    try:
        control.no_such_field
    except AttributeError as e:
        report["unknown_field_error"] = str(e)
    with open(os.path.join(os.environ["RUNNER_TEST_DIR"], "introspect.json"), "w") as f:
        json.dump(report, f)
    with open(os.path.join(os.environ["TMPDIR"], "scratch.txt"), "w") as f:
        f.write("temporary")
    with open(os.path.join(os.environ["HOME"], ".scriptrc"), "w") as f:
        f.write("private home")
    print("introspected")
