"""The stores of the session's smoke sweep as a user sees them: `mlflow ui` and
optuna-dashboard on 127.0.0.1, their pages rendered by headless Chromium.

STUDY_SCREENSHOTS=DIR keeps the screenshots there (how docs/img/ was made).
"""

import json
import os

import pytest
from browser import chromium, dom, js_number, mlflow_ui, optuna_dashboard, screenshot
from fixtures import free_port

pytestmark = pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (apt-get install -y "
                                "chromium; .ci/run installs it): the browser check cannot run here")
OBJECTIVES = ("lt/top1", "lt/balancedness")


def _keep(url: str, name: str) -> None:
    """With STUDY_SCREENSHOTS=DIR, a screenshot of the page as DIR/name (a few seconds each:
    only when asked for)."""
    folder = os.environ.get("STUDY_SCREENSHOTS")
    if folder:
        png = screenshot(url, os.path.join(folder, name))
        assert png.stat().st_size > 10_000             # a rendered page, not a blank one


def test_the_mlflow_ui_shows_the_sweeps_parent_run_its_child_runs_and_their_objectives(smoke_sweep):
    from mlflow.tracking import MlflowClient
    code, storage, _, _ = smoke_sweep
    assert code == 0
    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kpcl").experiment_id
    runs = client.search_runs([experiment])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.run_name == "smoke" and len(children) == 4
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with mlflow_ui(storage / "mlflow.db", port):
        # the parent run's page lists its child runs by name
        page = dom(f"{base}/#/experiments/{experiment}/runs/{parent.info.run_id}")
        (block,) = page.all(lambda n: n.attrs.get("data-testid") == "key-value-Child runs")
        assert "smoke" in page.text()
        assert sorted(a.text() for a in block.all(lambda n: n.tag == "a")) == sorted(c.info.run_name for c in children)
        # the runs table with the objectives as columns: a view shared as the UI's Share button does
        view = {"orderByKey": f"metrics.`{OBJECTIVES[0]}`", "orderByAsc": False,
                "selectedColumns": [f"metrics.`{m}`" for m in OBJECTIVES],
                "columnOrder": [f"metrics.`{m}`" for m in OBJECTIVES],
                "columnWidths": {f"metrics.`{m}`": 170 for m in OBJECTIVES}}
        client.set_experiment_tag(experiment, "mlflow.sharedViewState.objectives", json.dumps(view))
        url = f"{base}/#/experiments/{experiment}/runs?viewStateShareKey=objectives"
        cells = {}
        for row in dom(url).all(lambda n: "row-id" in n.attrs):
            for cell in row.all(lambda n: n.attrs.get("role") == "gridcell" and "col-id" in n.attrs):
                cells.setdefault(row.attrs["row-id"], {})[cell.attrs["col-id"]] = cell.text()
        assert parent.info.run_name in cells[parent.info.run_id]["attributes.`Run Name`"]
        for child in children:
            shown = cells[child.info.run_id]
            assert child.info.run_name in shown["attributes.`Run Name`"]
            assert [shown[f"metrics.`{m}`"] for m in OBJECTIVES] == [
                js_number(child.data.metrics[m]) for m in OBJECTIVES]
        _keep(url, "mlflow-runs.png")


def test_optuna_dashboard_lists_each_study_of_the_sweep_with_its_trial_count(smoke_sweep):
    import optuna
    code, storage, _, _ = smoke_sweep
    assert code == 0
    url = f"sqlite:///{storage / 'optuna.db'}"
    counts = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(url)}
    assert counts == {"smoke:ratio=1": 2, "smoke:ratio=10": 2}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with optuna_dashboard(storage / "optuna.db", port):
        cards = {}
        for link in dom(f"{base}/dashboard").all(lambda n: n.tag == "a" and "/dashboard/studies/" in
                                                 n.attrs.get("href", "")):
            for title in link.all(lambda n: n.tag == "h5"):                   # "<id>. <study name>"
                cards[title.text().split(". ", 1)[1]] = link.attrs["href"].rsplit("/", 1)[1]
        assert set(cards) == set(counts)
        for name, n in counts.items():
            page = dom(f"{base}/dashboard/studies/{cards[name]}/trials")
            assert f"{name} (id={cards[name]})" in page.text()
            assert f"{n} Trials" in [p.text() for p in page.all(lambda n: n.tag == "p")]
        _keep(f"{base}/dashboard", "optuna-dashboard.png")
        _keep(f"{base}/dashboard/studies/{cards['smoke:ratio=1']}", "optuna-study.png")
