"""analytics-query: the DuckDB read model behind KPIs, series, inventory status and alerts.

Entry points: ``python -m services.analytics`` and ``services.analytics.app.build_app``. Importing this
package does nothing.
"""
