// MR-VAE web page: pick or drop a photo, POST it to /api/enhance, show a before/after slider.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  model: $("model"), strength: $("strength"), strengthValue: $("strength-value"),
  exposure: $("exposure"), exposureValue: $("exposure-value"),
  drop: $("drop"), file: $("file"), limits: $("limits"), progress: $("progress"),
  status: $("status"), result: $("result"), before: $("before"), after: $("after"),
  divider: $("divider"), split: $("split"), download: $("download"),
};
const state = { file: null, beforeUrl: null, afterUrl: null, limits: null, request: null };

function setStatus(text, isError = false) {
  ui.status.textContent = text;
  ui.status.classList.toggle("error", isError);
}

function setProgress(percent) {
  ui.progress.hidden = percent === null;
  if (percent === undefined) ui.progress.removeAttribute("value");  // indeterminate
  else if (percent !== null) ui.progress.value = percent;
}

async function loadOptions() {
  try {
    const [models, health] = await Promise.all(
      ["/api/models", "/api/health"].map((url) => fetch(url).then((r) => r.json())));
    for (const entry of models.models) {
      const option = new Option(entry.label || entry.name, entry.name);
      option.selected = entry.name === models.default;
      ui.model.add(option);
    }
    state.limits = health.limits;
    ui.limits.textContent = `Up to ${health.limits.max_upload_mb} MB and ` +
      `${health.limits.max_megapixels} megapixels; JPEG, PNG, TIFF, WebP, BMP, HEIC, AVIF ` +
      "or camera RAW (DNG, CR2/CR3, NEF, ARW, RAF, ...).";
  } catch (error) {
    setStatus(`Cannot reach the server (${error.message}).`, true);
  }
}

function errorMessage(xhr) {
  return new Promise((resolve) => {
    const fallback = `Request failed (HTTP ${xhr.status}).`;
    if (!(xhr.response instanceof Blob)) return resolve(fallback);
    xhr.response.text().then((text) => {
      try {
        const detail = JSON.parse(text).detail;
        if (typeof detail === "string") return resolve(detail);
        if (Array.isArray(detail)) return resolve(detail.map((d) => d.msg).join("; "));
      } catch (_) { /* not JSON: fall through */ }
      resolve(fallback);
    }, () => resolve(fallback));
  });
}

function downloadName(xhr) {
  const header = xhr.getResponseHeader("Content-Disposition") || "";
  const match = /filename="([^"]+)"/.exec(header);
  return match ? match[1] : "enhanced.png";
}

function showResult(blob, name, seconds) {
  if (state.afterUrl) URL.revokeObjectURL(state.afterUrl);
  state.afterUrl = URL.createObjectURL(blob);
  ui.after.onload = () => {
    ui.result.hidden = false;
    setProgress(null);
    setStatus(`Done in ${seconds.toFixed(1)} s.`);
  };
  ui.after.src = state.afterUrl;
  ui.download.href = state.afterUrl;
  ui.download.download = name;
}

function enhance() {
  if (!state.file) return;
  const file = state.file;
  const limits = state.limits;
  if (limits && file.size > limits.max_upload_mb * 1024 * 1024) {
    setStatus(`${file.name} is larger than ${limits.max_upload_mb} MB.`, true);
    return;
  }
  if (state.request) state.request.abort();
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("model", ui.model.value);
  form.append("strength", String(ui.strength.value / 100));
  form.append("exposure", ui.exposure.value);

  const xhr = new XMLHttpRequest();
  state.request = xhr;
  const started = performance.now();
  let timer = null;
  xhr.open("POST", "/api/enhance");
  xhr.responseType = "blob";
  xhr.upload.onprogress = (event) => {
    if (!event.lengthComputable) return;
    const percent = Math.round((100 * event.loaded) / event.total);
    setProgress(percent);
    setStatus(`Uploading ${file.name}: ${percent}%`);
  };
  xhr.upload.onload = () => {
    setProgress(undefined);
    timer = setInterval(() => {
      setStatus(`Enhancing… ${((performance.now() - started) / 1000).toFixed(0)} s`);
    }, 250);
    setStatus("Enhancing…");
  };
  xhr.onloadend = () => {
    clearInterval(timer);
    if (state.request === xhr) state.request = null;
  };
  xhr.onload = async () => {
    if (xhr.status === 200) {
      showResult(xhr.response, downloadName(xhr), (performance.now() - started) / 1000);
    } else {
      setProgress(null);
      setStatus(await errorMessage(xhr), true);
    }
  };
  xhr.onerror = () => {
    setProgress(null);
    setStatus("Network error: the server did not answer.", true);
  };
  setProgress(0);
  setStatus(`Uploading ${file.name}…`);
  xhr.send(form);
}

// A format the browser cannot show (TIFF, HEIC, RAW): the server decodes the photo and sends
// it back unchanged (strength 0, no model run) as PNG; failing that, the result shows on both sides.
async function previewFromServer(file) {
  ui.before.onerror = () => { if (state.afterUrl) ui.before.src = state.afterUrl; };
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("model", ui.model.value);
  form.append("strength", "0");
  try {
    const response = await fetch("/api/enhance", { method: "POST", body: form });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const blob = await response.blob();
    if (state.file !== file) return;  // another photo was chosen meanwhile
    if (state.beforeUrl) URL.revokeObjectURL(state.beforeUrl);
    state.beforeUrl = URL.createObjectURL(blob);
    ui.before.src = state.beforeUrl;
  } catch (_) {
    if (state.file === file && state.afterUrl) ui.before.src = state.afterUrl;
  }
}

function chooseFile(file) {
  if (!file) return;
  state.file = file;
  if (state.beforeUrl) URL.revokeObjectURL(state.beforeUrl);
  state.beforeUrl = URL.createObjectURL(file);
  ui.before.onerror = () => previewFromServer(file);
  ui.before.src = state.beforeUrl;
  ui.result.hidden = true;
  enhance();
}

function moveSplit() {
  const percent = ui.split.value;
  ui.after.style.clipPath = `inset(0 0 0 ${percent}%)`;
  ui.divider.style.left = `${percent}%`;
}

ui.file.addEventListener("change", () => chooseFile(ui.file.files[0]));
ui.drop.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") { event.preventDefault(); ui.file.click(); }
});
for (const name of ["dragenter", "dragover"]) {
  ui.drop.addEventListener(name, (event) => { event.preventDefault(); ui.drop.classList.add("over"); });
}
for (const name of ["dragleave", "drop"]) {
  ui.drop.addEventListener(name, () => ui.drop.classList.remove("over"));
}
ui.drop.addEventListener("drop", (event) => {
  event.preventDefault();
  chooseFile(event.dataTransfer.files[0]);
});
ui.strength.addEventListener("input", () => { ui.strengthValue.value = `${ui.strength.value}%`; });
ui.strength.addEventListener("change", enhance);
ui.exposure.addEventListener("input", () => {
  const stops = Number(ui.exposure.value);
  ui.exposureValue.value = stops === 0 ? "auto" : `${stops > 0 ? "+" : ""}${stops} EV`;
});
ui.exposure.addEventListener("change", enhance);
ui.model.addEventListener("change", enhance);
ui.split.addEventListener("input", moveSplit);

loadOptions();
