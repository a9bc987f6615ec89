"""Summarises the daily orders; the load fails because its target table is missing,
raising the way a database driver does (a pure-Python stand-in, no database needed)."""
from datetime import datetime

from airflow.sdk import DAG, task


class ProgrammingError(Exception):
    """What DB-API drivers raise for a missing table."""


class WarehouseCursor:
    def __init__(self, catalog):
        self.catalog = catalog

    def execute(self, sql, table):
        if table not in self.catalog:
            raise ProgrammingError(f"Table {table} not found")
        return []


with DAG(
    dag_id="orders_daily_load",
    description="Loads yesterday's orders into warehouse.orders_summary",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["warehouse", "orders"],
    default_args={"owner": "data-eng", "retries": 0},
):

    @task
    def extract_orders():
        return 42

    @task
    def load_orders_daily(rows):
        cursor = WarehouseCursor(catalog={"warehouse.orders_raw"})
        print(f"loading {rows} rows into warehouse.orders_summary")
        cursor.execute("INSERT INTO warehouse.orders_summary SELECT * FROM staging", "warehouse.orders_summary")

    load_orders_daily(extract_orders())
