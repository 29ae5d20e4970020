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

import json

from reid_srdl.evaluation import colours

PAGE_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>reid_srdl gallery search</title>
<link rel="stylesheet" href="/page.css"></head>
<body>
<h1>Who is this, and are they here?</h1>
<p id="stats">loading...</p>
<div id="drop">Drop a query image here, or <input type="file" id="file" accept="image/*"></div>
<div class="controls">
  <label>or gallery item <input type="text" id="gallery_id" class="narrow" title="a hit's id (its #id)">
    <button id="pick">search with it</button></label>
</div>
<div class="controls">
  <label>k <input type="number" id="k" value="10" min="1" max="100" class="tiny"></label>
  <label>threshold <input type="text" id="threshold" value="calibrated" class="narrow"
    title="calibrated, a distance, or empty for no decision"></label>
  <label>leave out camera <select id="camera"><option value="">none</option></select></label>
  <button id="search">search</button>
</div>
<div class="controls">
  <label>only cameras <input type="text" id="cameras" class="narrow" placeholder="e.g. c1,c3"
    title="comma-separated camera names; empty: every camera"></label>
  <label>seen from <input type="text" id="time_from" class="narrow" placeholder="2024-05-01T14:00Z"
    title="UTC, ISO 8601 (a time without an offset is UTC); empty: no lower bound"></label>
  <label>to <input type="text" id="time_to" class="narrow" placeholder="2024-05-01T15:00Z"
    title="UTC, ISO 8601; empty: no upper bound"></label>
</div>
<div id="legend">LEGEND</div>
<div id="decision"></div>
<div id="source" class="note"></div>
<div id="row"><figure id="query" hidden><img id="query_img" alt="query"><figcaption>query</figcaption></figure>
<div id="results"></div></div>
<div id="timeline_panel" hidden>
  <h2>Where and when this person was seen</h2>
  <p class="note" id="timeline_note"></p>
  <div id="timeline"></div>
</div>
<div id="frame_view" hidden>
  <h2>The frame <button id="frame_close">close</button></h2>
  <p id="frame_caption" class="note"></p>
  <div id="frame_wrap"><img id="frame_img" alt="the frame this crop was cut from"></div>
</div>
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
figure.hit img.clickable {{ cursor: pointer; }}
figcaption span {{ display: block; }}
.pickme {{ font-size: 11px; margin-top: 2px; }}
#timeline_panel, #frame_view {{ margin-top: 1.5em; border-top: 1px solid #ddd; }}
#timeline svg {{ font-size: 11px; font-family: sans-serif; }}
#frame_wrap {{ position: relative; display: inline-block; width: min(960px, 100%); }}
#frame_wrap img {{ display: block; width: 100%; height: auto; }}
figcaption .id {{ color: #999; font-size: 10px; }}
#frame_wrap svg {{ position: absolute; left: 0; top: 0; width: 100%; height: 100%; }}
"""

PAGE_JS = (
    r"""
'use strict';
const TOKEN_KEY = 'reid_srdl_token';
const SVG = 'http://www.w3.org/2000/svg';
const COLOURS = COLOURS_JSON;
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

// UTC seconds -> "2024-05-01 14:02:11 UTC" (every time on the page is UTC, as stored).
function utc(ts) {
  if (ts === null || ts === undefined) { return ''; }
  return new Date(ts * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, '').replace('Z', '') + ' UTC';
}

function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) { el.setAttribute(k, v); }
  if (text !== undefined) { el.textContent = text; }
  return el;
}

async function loadStats() {
  const r = await fetch('/stats');
  const s = await r.json();
  if (!r.ok) { $('stats').textContent = 'error: ' + s.error; return; }
  // Identities and cameras are counted by a scan, left out (null) for very large galleries.
  const counted = s.cameras !== null && s.cameras !== undefined;
  $('stats').textContent = s.images + ' images' + (counted ? ', ' + s.identities + ' identities, cameras ' +
    (s.cameras.join(', ') || 'unknown') : '') + '; model ' + s.model +
    (s.calibration ? '; calibrated threshold ' + s.calibration.threshold.toFixed(3) + ' at FAR ' +
      (100 * s.calibration.far) + '%' : '; no calibrated threshold');
  if (!s.calibration) { $('threshold').value = ''; }
  const select = $('camera');
  while (select.options.length > 1) { select.remove(1); }
  for (const c of (s.cameras || [])) {
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
  f.append('exclude_camera', $('camera').value);
  // The time window and the cameras to keep: checked by the server, which answers 400 and one line.
  f.append('cameras', $('cameras').value);
  f.append('time_from', $('time_from').value); f.append('time_to', $('time_to').value); return f;
}

function showQuery(src) {
  if (queryUrl) { URL.revokeObjectURL(queryUrl); queryUrl = null; }
  $('query').hidden = !src;
  if (src) { $('query_img').src = src; }
}

function decisionColour(h) {
  if (h.within_threshold === undefined) { return COLOURS.none; }
  return h.within_threshold ? COLOURS.within : COLOURS.beyond;
}

function captionOf(h) {
  const cap = document.createElement('figcaption');
  const line = (cls, text) => { const s = document.createElement('span'); s.className = cls; s.textContent = text;
    cap.appendChild(s); };
  line('rank', '#' + h.rank + ' d=' + h.distance.toFixed(3));
  line('cam', h.camera || 'camera ?');
  if (h.timestamp !== undefined && h.timestamp !== null) { line('time', utc(h.timestamp)); }
  if (h.pid !== undefined && h.pid >= 0) { line('pid', 'pid ' + h.pid); }
  line('id', '#' + h.id_str);
  return cap;
}

function show(out) {
  const d = $('decision');
  $('frame_view').hidden = true;
  if (out.error) {
    d.className = 'error'; d.textContent = 'error: ' + out.error; $('results').innerHTML = '';
    $('source').textContent = ''; $('timeline_panel').hidden = true; return;
  }
  const queryPid = out.query ? out.query.pid : undefined;
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
    fig.dataset.id = h.id_str;
    const img = document.createElement('img'); img.src = h.image_url; img.alt = 'gallery item ' + h.id_str;
    if (h.frame_url) { img.className = 'clickable'; img.title = 'show the frame'; img.onclick = () => showFrame(h); }
    fig.appendChild(img);
    if (queryPid !== undefined && queryPid >= 0 && h.pid >= 0) {
      const bar = document.createElement('div');
      bar.className = 'truth ' + (h.pid === queryPid ? 'same' : 'other');
      bar.title = h.pid === queryPid ? 'same person' : 'another person';
      fig.appendChild(bar);
    }
    fig.appendChild(captionOf(h));
    const again = document.createElement('button');
    again.className = 'pickme'; again.textContent = 'search this person';
    again.onclick = () => pick(h.id_str);
    fig.appendChild(again);
    box.appendChild(fig);
  }
  drawTimeline(out);
}

// Cameras as rows, UTC time as x: every sighting within the threshold (not only the k shown).
function drawTimeline(out) {
  const panel = $('timeline_panel'); const host = $('timeline'); host.innerHTML = '';
  const seen = (out.sightings || []).filter((s) => s.timestamp !== null && s.timestamp !== undefined);
  panel.hidden = out.sightings === undefined || out.sightings === null;
  if (panel.hidden) { return; }
  if (!seen.length) {
    $('timeline_note').textContent = 'no sighting within the threshold has a time';
    return;
  }
  const cams = [...new Set(seen.map((s) => s.camera || 'camera ?'))].sort();
  let t0 = Math.min(...seen.map((s) => s.timestamp)); let t1 = Math.max(...seen.map((s) => s.timestamp));
  if (t1 === t0) { t0 -= 30; t1 += 30; }
  const left = 90; const width = 720; const row = 26; const top = 10;
  const height = top + row * cams.length + 34;
  const root = svg('svg', {id: 'timeline_svg', width: left + width + 20, height: height,
    viewBox: '0 0 ' + (left + width + 20) + ' ' + height});
  const x = (t) => left + (t - t0) / (t1 - t0) * width;
  cams.forEach((c, i) => {
    const y = top + row * i + row / 2;
    root.appendChild(svg('line', {x1: left, x2: left + width, y1: y, y2: y, stroke: '#ddd'}));
    root.appendChild(svg('text', {x: left - 8, y: y + 4, 'text-anchor': 'end', class: 'camera'}, c));
  });
  const axisY = top + row * cams.length + 8;
  root.appendChild(svg('line', {x1: left, x2: left + width, y1: axisY, y2: axisY, stroke: '#888'}));
  root.appendChild(svg('text', {x: left, y: axisY + 16, class: 'start'}, utc(t0)));
  root.appendChild(svg('text', {x: left + width, y: axisY + 16, 'text-anchor': 'end', class: 'end'}, utc(t1)));
  for (const s of seen) {
    const y = top + row * cams.indexOf(s.camera || 'camera ?') + row / 2;
    const dot = svg('circle', {cx: x(s.timestamp), cy: y, r: 5, fill: COLOURS.within, class: 'sighting',
      'data-id': s.id_str, 'data-camera': s.camera || '', 'data-timestamp': String(s.timestamp)});
    dot.appendChild(svg('title', {}, (s.camera || 'camera ?') + ', ' + utc(s.timestamp) + ', d=' +
      s.distance.toFixed(3)));
    if (s.frame_url) { dot.addEventListener('click', () => showFrame(s)); dot.setAttribute('cursor', 'pointer'); }
    root.appendChild(dot);
  }
  host.appendChild(root);
  $('timeline_note').textContent = seen.length + ' sightings within the threshold, ' + cams.length +
    ' cameras, from ' + utc(t0) + ' to ' + utc(t1) + (out.sightings_truncated ? ' (the nearest ones only)' : '');
}

// The whole frame the crop was cut from, its box drawn over it in the hit's decision colour.
function showFrame(h) {
  const view = $('frame_view'); const wrap = $('frame_wrap'); const img = $('frame_img');
  const old = $('frame_svg'); if (old) { old.remove(); }
  $('frame_caption').textContent = [h.camera || 'camera ?', utc(h.timestamp),
    h.frame >= 0 ? 'frame ' + h.frame : 'still image', (h.source || '').split('/').pop()].filter((t) => t).join(', ');
  img.onload = () => {
    const w = img.naturalWidth; const hh = img.naturalHeight;
    const over = svg('svg', {id: 'frame_svg', viewBox: '0 0 ' + w + ' ' + hh, preserveAspectRatio: 'none'});
    if (h.box) {
      over.appendChild(svg('rect', {id: 'frame_box', x: h.box[0], y: h.box[1], width: h.box[2], height: h.box[3],
        fill: 'none', stroke: decisionColour(h), 'stroke-width': 3, 'vector-effect': 'non-scaling-stroke'}));
    }
    wrap.appendChild(over);
  };
  img.src = h.frame_url;
  view.hidden = false;
}
$('frame_close').onclick = () => { $('frame_view').hidden = true; };

async function run(f) {
  $('decision').className = ''; $('decision').textContent = 'searching...';
  try {
    const r = await fetch('/search', {method: 'POST', body: f});
    const out = await r.json();
    if (out.query && out.query.image_url) { showQuery(out.query.image_url); }
    show(out);
  } catch (e) { show({error: String(e)}); }
}

function pick(id) {
  $('gallery_id').value = id;
  const f = form(); f.append('gallery_id', id); showQuery(null); run(f);
}

$('search').onclick = () => {
  if (!chosen) { show({error: 'choose a query image first'}); return; }
  showQuery(null); queryUrl = URL.createObjectURL(chosen); $('query').hidden = false; $('query_img').src = queryUrl;
  const f = form(); f.append('file', chosen); run(f);
};
$('pick').onclick = () => pick($('gallery_id').value.trim());
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
).replace(
    "COLOURS_JSON",
    json.dumps({"within": colours.WITHIN, "beyond": colours.BEYOND, "none": colours.NO_DECISION}),
)
