"""The Streamlit web UI; it talks to the API over HTTP only (`facegate.ui.client`)."""
