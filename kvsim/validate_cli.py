"""``kvsim validate``'s command line: arguments, their one-line errors, and the printed headline
(the work is :func:`kvsim.validate.run_validation`)."""
from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    v = sub.add_parser("validate", help="compare the calibrated simulator with the real engine")
    v.add_argument("scenarios", nargs="+")
    v.add_argument("--profile", action="append", required=True,
                   help="profile JSON (repeat for several models; each scenario uses its model's)")
    v.add_argument("--out", default="runs/validation")
    v.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    v.add_argument("--replay", action="store_true", help="re-run only the simulator against saved engine records")
    v.add_argument("--repeats", default=None, metavar="N",
                   help="engine runs per scenario (default 1); the error is against the runs' median, with their "
                        "range beside it (--replay reads every repeat saved)")
    v.add_argument("--sensitivity", action="store_true",
                   help="also simulate each scenario with every step time 2%% shorter and 2%% longer and write each "
                        "metric's elasticity and the step-time error its error implies (sensitivity.{csv,md})")
    v.set_defaults(func=cmd_validate)


def _repeats(args) -> int:
    from kvsim.errors import KvsimError
    if args.repeats is None:
        return 1
    try:
        n = int(args.repeats)
    except ValueError:
        raise KvsimError("--repeats", f"expected a whole number of engine runs, got {args.repeats!r}") from None
    if not 1 <= n <= 20:
        raise KvsimError("--repeats", f"expected 1 to 20 engine runs per scenario, got {n}")
    if args.replay and n != 1:
        raise KvsimError("--repeats", "--replay reads the repeats already saved (engine/, engine_r2/, ...); "
                                      "--repeats is for live runs")
    return n


def cmd_validate(args) -> int:
    from kvsim.validate import METRICS, headline, run_validation     # (pandas: not for building the parser)
    n = _repeats(args)
    df = run_validation(args.scenarios, args.profile, Path(args.out), replay=args.replay, overrides=args.set,
                        repeats=n, sensitivity=args.sensitivity)
    head = headline(df)
    for k, label in METRICS:
        if k in head:
            h = head[k]
            print(f"  {label:<34} median |err| {h['median_abs_rel_error']:6.1%}   worst {h['worst']} "
                  f"({h['worst_rel_error']:+.1%})")
    rep = df[df.repeats > 1]
    if len(rep):
        inside = int(rep.in_range.fillna(False).astype(bool).sum())
        print(f"  engine repeats: {rep.scenario.nunique()} scenario(s) run {int(rep.repeats.min())}-"
              f"{int(rep.repeats.max())} times; {inside} of {len(rep)} predictions inside the runs' range")
    tag = "-replay" if args.replay else ""
    from kvsim.validate_spread import console_line
    line = console_line(df.attrs["request_spread"], f"request-spread{tag}.md")
    if line:
        print(line)
    print(f"wrote {args.out}/validation{tag}.{{csv,md}}")
    return 0
