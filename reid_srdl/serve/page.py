"""The one HTML page of the web app (plain HTML + JavaScript, no external assets)."""

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>reid_srdl gallery search</title>
<style>
body { font-family: sans-serif; margin: 1.5em; color: #222; }
#drop { border: 2px dashed #888; padding: 1.2em; text-align: center; margin-bottom: 1em; }
#drop.over { background: #eef; }
.controls label { margin-right: 1em; }
#results { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 1em; }
figure { margin: 0; text-align: center; font-size: 12px; }
figure img { height: 128px; border: 4px solid #aaa; display: block; }
figure.within img { border-color: #2a2; } figure.beyond img { border-color: #c33; }
#decision { font-size: 20px; font-weight: bold; margin-top: .8em; }
.match { color: #2a2; } .nomatch { color: #c33; } .error { color: #c33; }
#stats { color: #666; font-size: 13px; }
</style></head>
<body>
<h1>Who is this, and are they here?</h1>
<p id="stats">loading...</p>
<div id="drop">Drop a query image here, or <input type="file" id="file" accept="image/*"></div>
<div class="controls">
  <label>or gallery image # <input type="number" id="gallery_index" min="0" style="width:6em">
    <button id="pick">search with it</button></label>
</div>
<div class="controls" style="margin-top:.6em">
  <label>k <input type="number" id="k" value="10" min="1" max="100" style="width:4em"></label>
  <label>threshold <input type="text" id="threshold" value="calibrated" style="width:7em"
    title="calibrated, a distance, or empty for no decision"></label>
  <label>leave out camera <select id="camera"><option value="">none</option></select></label>
  <button id="search">search</button>
</div>
<div id="decision"></div>
<div id="source" style="color:#666;font-size:12px"></div>
<div id="results"></div>
<script>
let chosen = null;
const $ = (id) => document.getElementById(id);
async function loadStats() {
  const r = await fetch('/stats'); const s = await r.json();
  $('stats').textContent = s.images + ' images, ' + s.identities + ' identities, cameras ' +
    (s.cameras.join(', ') || 'unknown') + '; model ' + s.model +
    (s.calibration ? '; calibrated threshold ' + s.calibration.threshold.toFixed(3) + ' at FAR ' +
      (100 * s.calibration.far) + '%' : '; no calibrated threshold');
  if (!s.calibration) { $('threshold').value = ''; }
  for (const c of s.cameras) { const o = document.createElement('option'); o.value = c; o.textContent = c;
    $('camera').appendChild(o); }
}
function form() {
  const f = new FormData();
  f.append('k', $('k').value); f.append('threshold', $('threshold').value);
  f.append('exclude_camera', $('camera').value); return f;
}
function show(out) {
  const d = $('decision');
  if (out.error) { d.className = 'error'; d.textContent = 'error: ' + out.error; $('results').innerHTML = '';
    $('source').textContent = ''; return; }
  if (out.decision) {
    d.className = out.decision === 'match' ? 'match' : 'nomatch';
    d.textContent = out.decision + ' (nearest distance ' + (out.nearest_distance === null ? '-' :
      out.nearest_distance.toFixed(3)) + ', threshold ' + out.threshold.toFixed(3) + ')';
    $('source').textContent = 'threshold: ' + out.threshold_source;
  } else { d.className = ''; d.textContent = 'no decision (no threshold)'; $('source').textContent = ''; }
  const box = $('results'); box.innerHTML = '';
  for (const h of out.hits) {
    const fig = document.createElement('figure');
    fig.className = 'hit' + (h.within_threshold === undefined ? '' : (h.within_threshold ? ' within' : ' beyond'));
    const img = document.createElement('img'); img.src = h.image_url; img.alt = 'gallery ' + h.index;
    const cap = document.createElement('figcaption');
    cap.textContent = '#' + h.rank + ' d=' + h.distance.toFixed(3) + ' pid ' + (h.pid >= 0 ? h.pid : '?') +
      ' ' + (h.camera || '');
    fig.appendChild(img); fig.appendChild(cap); box.appendChild(fig);
  }
}
async function run(f) {
  $('decision').className = ''; $('decision').textContent = 'searching...';
  const r = await fetch('/search', {method: 'POST', body: f}); show(await r.json());
}
$('search').onclick = () => { if (!chosen) { show({error: 'choose a query image first'}); return; }
  const f = form(); f.append('file', chosen); run(f); };
$('pick').onclick = () => { const f = form(); f.append('gallery_index', $('gallery_index').value); run(f); };
$('file').onchange = (e) => { chosen = e.target.files[0]; $('search').click(); };
const drop = $('drop');
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add('over'); };
drop.ondragleave = () => drop.classList.remove('over');
drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove('over');
  chosen = e.dataTransfer.files[0]; $('search').click(); };
loadStats();
</script>
</body></html>
"""
