# install() exercises setuphelpers from inside a real run.
from setuphelpers import *
import json


def install():
    target = os.environ["RUNNER_TEST_DIR"]
    report = {}
    mkdirs(makepath(target, "deep", "er"))
    report["mkdirs"] = isdir(makepath(target, "deep", "er"))
    filecopyto("files/one.txt", target)
    report["filecopyto"] = open(makepath(target, "one.txt")).read()
    report["copytree2"] = sorted(os.path.relpath(p, target) for p in copytree2("files", makepath(target, "tree")))
    out = run("echo from-run; echo to-stderr >&2")
    report["run"] = [str(out), out.returncode]
    try:
        run("echo failing; exit 4")
    except CalledProcessErrorOutput as e:
        report["run_error"] = [e.returncode, e.output]
    report["run_notfatal"] = run_notfatal("exit 5")
    report["os_name"] = get_os_name()
    report["home"] = user_home_directory()
    with open(makepath(target, "helpers.json"), "w") as f:
        json.dump(report, f)
