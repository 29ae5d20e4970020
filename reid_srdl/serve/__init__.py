"""The web app over any gallery store (FastAPI + uvicorn: ``pip install -e ".[serve]"``).

app           create_app(searcher, gallery_path, upload_dir, access=..., image_roots=...): the routes
service       GalleryService: search (hits, sightings), add (all or nothing), stats, which file a request may see
requests      the form fields, checked (400 and one line)
frames        GET /frame/{id}: the frame a crop was cut from, decoded from its video by index, bounded
guard         AccessPolicy + middleware: Host and Origin on every request, the owner's token on writes
housekeeping  image roots, the .npz writer's lock, partial uploads of a killed server
page          the HTML page, its stylesheet and script
"""
