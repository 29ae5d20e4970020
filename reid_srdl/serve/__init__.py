"""The web app over a saved gallery (FastAPI + uvicorn: ``pip install -e ".[serve]"``).

app           create_app(searcher, gallery_path, upload_dir, access=..., image_roots=...): the routes
service       GalleryService: search, add (all or nothing), stats, which image a request may see
guard         AccessPolicy + middleware: Host and Origin on every request, the owner's token on writes
housekeeping  image roots, the writer's lock, partial files of a killed server
page          the HTML page, its stylesheet and script
"""
