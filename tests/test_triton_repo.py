"""Repository building checks that need no server."""

from __future__ import annotations

import json

import pytest

from glama_deploy.triton.repo import RepoError, RepoOptions, build_repo


@pytest.mark.parametrize("plan_batch,ok", [(1, False), (8, True)])
def test_plan_profile_must_cover_max_batch(tmp_path, plan_batch, ok):
    """Triton refuses a plan whose profile batch is below max_batch_size: caught at build time."""
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"plan bytes")
    (tmp_path / "model.plan.json").write_text(json.dumps({"inputs": {"image": {"max": [plan_batch, 3, 2048, 2048]}}}))
    repo = tmp_path / "repo"
    if ok:
        build_repo(repo, RepoOptions(max_batch_size=8), plan=plan)
        assert (repo / "glama_trt" / "1" / "model.plan").read_bytes() == b"plan bytes"
    else:
        with pytest.raises(RepoError, match="allows batch <= 1 but --max-batch-size is 8"):
            build_repo(repo, RepoOptions(max_batch_size=8), plan=plan)
        assert not repo.exists()
