"""The web app over a saved gallery (FastAPI + uvicorn: ``pip install -e ".[serve]"``).

app   create_app(searcher, gallery_path, upload_dir): JSON API + the page
page  the HTML page
"""
