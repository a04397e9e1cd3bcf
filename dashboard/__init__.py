"""The Streamlit dashboard: ``app.py`` lays out, ``data``/``graph`` shape, ``source`` fetches."""
