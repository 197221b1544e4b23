"""benchmarks/sim/speed_readme.py: the README's speed block from the speed benchmarks' CSVs."""
from __future__ import annotations

from pathlib import Path

from tests._scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
speed_readme = load_script("benchmarks/sim/speed_readme.py")


def _write(tmp: Path) -> None:
    (tmp / "sim_modes_t.csv").write_text(
        "mode,requests,wall_s,s_per_1k,peak_rss_mib,iterations,ff_share,finished,throughput_req_s,error\n"
        "paged,10000,0.95,0.095,110.0,374663,0.97,10000,0.98,\n"
        "beam4,10000,25.5,2.55,119.0,214697,0.0,10000,0.98,\n")
    (tmp / "sim_scale_t.csv").write_text(
        "requests,wall_s,sim_s,peak_rss_mib,iterations,output_mib\n"
        "100000,13.2,11.0,173.1,3714125,40.3\n1000000,59.0,50.0,1100.0,36928039,407.0\n")


def test_block_states_each_bar_from_the_numbers(tmp_path):
    _write(tmp_path)
    text = speed_readme.block(tmp_path, "t")
    lines = text.splitlines()
    paged = next(x for x in lines if x.startswith("| paged |"))
    beam = next(x for x in lines if x.startswith("| beam width 4 |"))
    million = next(x for x in lines if x.startswith("| 1,000,000 |"))
    assert paged.endswith("| met |") and beam.endswith("| not met |")
    assert million.endswith("| not met |")          # under 60 s but over 1 GB
    assert "No paired Vidur run" in text and text.startswith(speed_readme.BEGIN) and text.endswith(speed_readme.END)


def test_readme_has_one_speed_block_and_it_is_replaced_whole(tmp_path):
    doc = (ROOT / "README.md").read_text()
    assert doc.count(speed_readme.BEGIN) == 1 and doc.count(speed_readme.END) == 1
    _write(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"head\n{speed_readme.BEGIN}\nOLD-CONTENT\n{speed_readme.END}\ntail\n")
    import sys
    argv = sys.argv
    sys.argv = ["speed_readme.py", "--dir", str(tmp_path), "--prefix", "t", "--readme", str(readme)]
    try:
        speed_readme.main()
    finally:
        sys.argv = argv
    out = readme.read_text()
    assert out.startswith("head\n") and out.endswith("\ntail\n") and "OLD-CONTENT" not in out and "| paged |" in out


VIDUR_HEAD = ("tool,version,run,requests,finished,wall_s,sim_s,peak_rss_mib,wall_ratio,sim_ratio,rss_ratio,"
              "mean_e2e_s,throughput_req_s,attention_profile\n")


def _write_vidur(tmp: Path, kvsim_version: str, *vidur_rows: str) -> None:
    """vidur_pair_t.csv: kvsim's median row at ``kvsim_version`` (wall 1 s, simulation 0.5 s), then Vidur's rows."""
    (tmp / "vidur_pair_t.csv").write_text(VIDUR_HEAD + f"kvsim,{kvsim_version},median,10,10,1.0,0.5,100,1.0,1.0,1.0,"
                                          "2.0,4.0,\n" + "".join(r + "\n" for r in vidur_rows))


def test_vidur_rows_read_the_medians_and_need_both_ratios(tmp_path):
    _write(tmp_path)
    _write_vidur(tmp_path, "x", "vidur,y,median,10,10,60.0,20.0,900,60.0,40.0,9.0,2.1,4.0,stand-in",
                 "vidur,y,1,10,10,99.0,99.0,900,,,,2.1,4.0,stand-in")
    rows = [x for x in speed_readme.block(tmp_path, "t").splitlines() if x.startswith("| vidur |")]
    assert len(rows) == 1 and "| 60.00 |" in rows[0]
    assert rows[0].endswith("| not met |")          # 60x on wall, 40x on simulation


def test_a_vidur_pair_from_another_commit_says_so(tmp_path):
    import json
    _write(tmp_path)
    _write_vidur(tmp_path, "0.1.0 @ 5686a01c7e5f", "vidur,y,median,10,10,60.0,20.0,900,60.0,40.0,9.0,2.1,4.0,")
    meta = tmp_path / "speed_t.json"
    meta.write_text(json.dumps({"commit": "1594e56"}))
    assert "not at the commit of the tables above (1594e56)" in speed_readme.block(tmp_path, "t")
    meta.write_text(json.dumps({"commit": "5686a01+"}))
    assert "not at the commit" not in speed_readme.block(tmp_path, "t")
