"""What a run leaves behind: the `report` (JSON, Markdown) and its HTML page (`report_html`),
assembled from a convert run in `run_report`; C++ sources for firmware (`embed`); the Android
assets (`android`); and the one way files are written (`atomic`: all or nothing)."""
