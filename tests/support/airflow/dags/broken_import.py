"""A DAG whose file cannot be imported: its client library is not installed."""
from datetime import datetime

from airflow.sdk import DAG, task
from warehouse_client import Connection  # noqa: F401  (the import error under test)

with DAG(dag_id="broken_import", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):

    @task
    def never_runs():
        pass

    never_runs()
