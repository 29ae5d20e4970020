"""The one page of the web app: HTML, its stylesheet and its script, served from the app's own
origin (``/``, ``/page.css``, ``/page.js``) so the Content-Security-Policy can forbid inline
and foreign code.

The owner's token reaches the page as Jupyter's does: the operator opens the link printed at
start-up, ``http://127.0.0.1:8000/?token=...``.  The script moves the token into
``sessionStorage`` (this origin -- scheme, host and port -- and this tab only; gone when the
tab closes) and removes it from the address bar with ``history.replaceState``, so it stays
out of the history, bookmarks and copied links.  It is sent only as an ``Authorization``
header on the page's own adds.  Unlike a cookie it is never attached to a request by the
browser itself, so another site cannot make the browser use it (no CSRF), and unlike a
cookie for 127.0.0.1 it is not shared with servers on other ports of the same host.
``Referrer-Policy: no-referrer`` keeps the ``?token=`` URL out of Referer headers, and
``connect-src 'self'`` keeps any script on the page from sending it elsewhere.

Colours (the same in the page, ``reid_srdl.search.report`` and ``eval_reid --visualize``):
a crop's border is the *decision* -- green within the threshold (a match), red beyond it,
grey without a threshold; a bar under the crop is the *ground truth* when both identities
are known -- blue for the same person, orange for another.
"""

from reid_srdl.evaluation import colours

PAGE_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>reid_srdl gallery search</title>
<link rel="stylesheet" href="/page.css"></head>
<body>
<h1>Who is this, and are they here?</h1>
<p id="stats">loading...</p>
<div id="drop">Drop a query image here, or <input type="file" id="file" accept="image/*"></div>
<div class="controls">
  <label>or gallery image # <input type="number" id="gallery_index" min="0" class="narrow">
    <button id="pick">search with it</button></label>
</div>
<div class="controls">
  <label>k <input type="number" id="k" value="10" min="1" max="100" class="tiny"></label>
  <label>threshold <input type="text" id="threshold" value="calibrated" class="narrow"
    title="calibrated, a distance, or empty for no decision"></label>
  <label>leave out camera <select id="camera"><option value="">none</option></select></label>
  <button id="search">search</button>
</div>
<div id="legend">LEGEND</div>
<div id="decision"></div>
<div id="source" class="note"></div>
<div id="row"><figure id="query" hidden><img id="query_img" alt="query"><figcaption>query</figcaption></figure>
<div id="results"></div></div>
<div id="add" hidden>
  <h2>Add images to the gallery</h2>
  <p id="add_note" class="note"></p>
  <div id="add_form" hidden>
    <input type="file" id="add_files" accept="image/*" multiple>
    <label>pids <input type="text" id="add_pids" class="narrow" placeholder="e.g. 12,12"></label>
    <label>cameras <input type="text" id="add_cameras" class="narrow" placeholder="e.g. c1,c2"></label>
    <button id="add_button">add</button> <span id="add_result"></span>
  </div>
</div>
<script src="/page.js"></script>
</body></html>
"""

# The legend's marks are classes (the CSP forbids inline styles); their colours are in PAGE_CSS.
_MARK = {
    colours.WITHIN: "swatch within",
    colours.BEYOND: "swatch beyond",
    colours.NO_DECISION: "swatch",
    colours.SAME_PERSON: "bar same",
    colours.OTHER_PERSON: "bar other",
}
LEGEND_HTML = "".join(
    f'<span class="key"><span class="{_MARK[colour]}"></span>{kind}: {text}</span>'
    for kind, colour, text in colours.LEGEND
)
PAGE_HTML = PAGE_HTML.replace("LEGEND", LEGEND_HTML, 1)

PAGE_CSS = f"""
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
#drop {{ border: 2px dashed #888; padding: 1.2em; text-align: center; margin-bottom: 1em; }}
#drop.over {{ background: #eef; }}
.controls {{ margin-top: .6em; }}
.controls label {{ margin-right: 1em; }}
.narrow {{ width: 7em; }} .tiny {{ width: 4em; }}
#row {{ display: flex; gap: 16px; margin-top: 1em; align-items: flex-start; }}
#results {{ display: flex; flex-wrap: wrap; gap: 8px; }}
figure {{ margin: 0; text-align: center; font-size: 12px; }}
figure img {{ height: 128px; border: 4px solid {colours.NO_DECISION}; display: block; }}
#query img {{ border-color: {colours.QUERY}; }}
figure.within img {{ border-color: {colours.WITHIN}; }} figure.beyond img {{ border-color: {colours.BEYOND}; }}
.truth {{ height: 6px; margin-top: 2px; }}
.truth.same {{ background: {colours.SAME_PERSON}; }} .truth.other {{ background: {colours.OTHER_PERSON}; }}
#legend {{ margin-top: .8em; font-size: 12px; color: #444; }}
.key {{ margin-right: 1.2em; white-space: nowrap; }}
.swatch {{ display: inline-block; width: 12px; height: 12px; border: 3px solid {colours.NO_DECISION};
  vertical-align: middle; margin-right: 4px; }}
.swatch.within {{ border-color: {colours.WITHIN}; }} .swatch.beyond {{ border-color: {colours.BEYOND}; }}
.bar {{ display: inline-block; width: 18px; height: 6px; vertical-align: middle; margin-right: 4px; }}
.bar.same {{ background: {colours.SAME_PERSON}; }} .bar.other {{ background: {colours.OTHER_PERSON}; }}
#decision {{ font-size: 20px; font-weight: bold; margin-top: .8em; }}
.match {{ color: {colours.WITHIN}; }} .nomatch {{ color: {colours.BEYOND}; }} .error {{ color: {colours.BEYOND}; }}
#stats, .note {{ color: #666; font-size: 13px; }}
#add {{ margin-top: 2em; border-top: 1px solid #ddd; }}
"""

PAGE_JS = r"""
'use strict';
const TOKEN_KEY = 'reid_srdl_token';
const $ = (id) => document.getElementById(id);
let chosen = null;
let queryUrl = null;

// The owner's token arrives once as ?token=...: kept for this tab only, removed from the URL.
(function takeToken() {
  const params = new URLSearchParams(window.location.search);
  const token = params.get('token');
  if (token === null) { return; }
  if (token) { sessionStorage.setItem(TOKEN_KEY, token); }
  params.delete('token');
  const rest = params.toString();
  history.replaceState(null, '', window.location.pathname + (rest ? '?' + rest : '') + window.location.hash);
})();

function ownerToken() { return sessionStorage.getItem(TOKEN_KEY); }

async function loadStats() {
  const r = await fetch('/stats');
  const s = await r.json();
  if (!r.ok) { $('stats').textContent = 'error: ' + s.error; return; }
  $('stats').textContent = s.images + ' images, ' + s.identities + ' identities, cameras ' +
    (s.cameras.join(', ') || 'unknown') + '; model ' + s.model +
    (s.calibration ? '; calibrated threshold ' + s.calibration.threshold.toFixed(3) + ' at FAR ' +
      (100 * s.calibration.far) + '%' : '; no calibrated threshold');
  if (!s.calibration) { $('threshold').value = ''; }
  const select = $('camera');
  while (select.options.length > 1) { select.remove(1); }
  for (const c of s.cameras) {
    const o = document.createElement('option'); o.value = c; o.textContent = c; select.appendChild(o);
  }
  showAddPanel(s.can_add);
}

function showAddPanel(canAdd) {
  $('add').hidden = !canAdd;
  if (!canAdd) { return; }
  const token = ownerToken();
  $('add_form').hidden = !token;
  $('add_note').textContent = token ? 'you are the owner of this server (token given)' :
    'adding needs the owner\'s token: open the link with ?token=... that the server printed at start-up';
}

function form() {
  const f = new FormData();
  f.append('k', $('k').value); f.append('threshold', $('threshold').value);
  f.append('exclude_camera', $('camera').value); return f;
}

function showQuery(src) {
  if (queryUrl) { URL.revokeObjectURL(queryUrl); queryUrl = null; }
  $('query').hidden = !src;
  if (src) { $('query_img').src = src; }
}

function caption(h) {
  const parts = ['#' + h.rank, 'd=' + h.distance.toFixed(3)];
  if (h.pid !== undefined && h.pid >= 0) { parts.push('pid ' + h.pid); }
  if (h.camera) { parts.push(h.camera); }
  return parts.join(' ');
}

function show(out) {
  const queryPid = out.query ? out.query.pid : undefined;
  const d = $('decision');
  if (out.error) {
    d.className = 'error'; d.textContent = 'error: ' + out.error; $('results').innerHTML = '';
    $('source').textContent = ''; return;
  }
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
    fig.appendChild(img);
    if (queryPid !== undefined && queryPid >= 0 && h.pid >= 0) {
      const bar = document.createElement('div');
      bar.className = 'truth ' + (h.pid === queryPid ? 'same' : 'other');
      bar.title = h.pid === queryPid ? 'same person' : 'another person';
      fig.appendChild(bar);
    }
    const cap = document.createElement('figcaption'); cap.textContent = caption(h);
    fig.appendChild(cap); box.appendChild(fig);
  }
}

async function run(f) {
  $('decision').className = ''; $('decision').textContent = 'searching...';
  try {
    const r = await fetch('/search', {method: 'POST', body: f});
    show(await r.json());
  } catch (e) { show({error: String(e)}); }
}

$('search').onclick = () => {
  if (!chosen) { show({error: 'choose a query image first'}); return; }
  showQuery(null); queryUrl = URL.createObjectURL(chosen); $('query').hidden = false; $('query_img').src = queryUrl;
  const f = form(); f.append('file', chosen); run(f);
};
$('pick').onclick = () => {
  const index = $('gallery_index').value;
  const f = form(); f.append('gallery_index', index);
  showQuery('/image/' + encodeURIComponent(index));
  run(f);
};
$('file').onchange = (e) => { chosen = e.target.files[0]; $('search').click(); };
const drop = $('drop');
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add('over'); };
drop.ondragleave = () => drop.classList.remove('over');
drop.ondrop = (e) => {
  e.preventDefault(); drop.classList.remove('over'); chosen = e.dataTransfer.files[0]; $('search').click();
};

$('add_button').onclick = async () => {
  const files = $('add_files').files;
  if (!files.length) { $('add_result').textContent = 'choose images first'; return; }
  const f = new FormData();
  for (const file of files) { f.append('files', file); }
  f.append('pids', $('add_pids').value); f.append('cameras', $('add_cameras').value);
  $('add_result').textContent = 'adding...';
  const r = await fetch('/gallery', {method: 'POST', body: f, headers: {'Authorization': 'Bearer ' + ownerToken()}});
  const out = await r.json();
  if (r.status === 401) { sessionStorage.removeItem(TOKEN_KEY); showAddPanel(true); }
  $('add_result').textContent = r.ok ? ('added ' + out.added + (out.duplicates ? ', ' + out.duplicates +
    ' already in the gallery' : '') + '; ' + out.images + ' images') : 'error: ' + out.error;
  if (r.ok) { loadStats(); }
};

loadStats();
"""
