"""A stand-in for a training script: prints a few steps, optionally a result file.

    python3 train.py --bs 8 [--NAME VALUE ...] [--out results/run.txt]

Every ``--NAME VALUE`` pair is echoed back, so the output shows which
parameters each job got. Standard library only.
"""
import os
import sys
import time

STEPS = 3
STEP_SECONDS = 0.1


def parse(argv):
    """``--name value`` pairs into a dict, in order."""
    if len(argv) % 2 or not all(a.startswith("--") for a in argv[::2]):
        sys.exit("usage: train.py --NAME VALUE [--NAME VALUE ...]")
    return {name[2:]: value for name, value in zip(argv[::2], argv[1::2])}


def main():
    args = parse(sys.argv[1:])
    out = args.pop("out", None)
    run = " ".join("%s=%s" % kv for kv in args.items())
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
    print("training %s%s" % (run, " on GPU %s" % gpu if gpu else ""), flush=True)
    for step in range(1, STEPS + 1):
        time.sleep(STEP_SECONDS)
        print("step %d/%d loss %.3f" % (step, STEPS, 1.0 / (step + 1)), flush=True)
    if out:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out, "w") as f:
            f.write("%s final loss %.3f\n" % (run, 1.0 / (STEPS + 1)))
        print("wrote " + out)


if __name__ == "__main__":
    main()
