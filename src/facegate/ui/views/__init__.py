"""The UI's pages, one script each, run by `st.navigation` in `facegate/ui/app.py`."""
