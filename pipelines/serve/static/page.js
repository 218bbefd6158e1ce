// The page of `saliency serve`: a photo in, its map, mask and cutout side by side.
// Each output is one POST /api/predict?kind=... to this server (the server batches them).
"use strict";

const KINDS = ["map", "mask", "cutout"];
const urls = [];

function $(selector) { return document.querySelector(selector); }

function say(text, isError) {
  const status = $("#status");
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
}

async function describeModel() {
  try {
    const response = await fetch("/api/health");
    const health = await response.json();
    $("#model").textContent = `model ${health.model} on ${health.device} (${health.precision})`;
  } catch (error) {
    $("#model").textContent = "the server did not answer";
  }
}

async function predict(file, kind) {
  const response = await fetch(`/api/predict?kind=${kind}`, {
    method: "POST", body: file, headers: {"Content-Type": "application/octet-stream"}});
  if (!response.ok) {
    let message = `${response.status}`;
    try { message = (await response.json()).error; } catch (ignored) { /* not JSON */ }
    throw new Error(message);
  }
  return response.blob();
}

function show(kind, blob, name) {
  const url = URL.createObjectURL(blob);
  urls.push(url);
  const figure = $(`figure[data-kind="${kind}"]`);
  figure.querySelector("img").src = url;
  const link = figure.querySelector("a");
  if (link) {
    link.href = url;
    link.download = `${name}.${kind}.png`;
  }
}

async function run(file) {
  if (!file) return;
  urls.splice(0).forEach((url) => URL.revokeObjectURL(url));
  $("#results").hidden = false;
  document.querySelectorAll("#results img").forEach((img) => img.removeAttribute("src"));
  const name = file.name.replace(/\.[^.]*$/, "") || "image";
  show("photo", file, name);
  say(`predicting ${file.name}...`);
  const started = performance.now();
  try {
    const blobs = await Promise.all(KINDS.map((kind) => predict(file, kind)));
    blobs.forEach((blob, index) => show(KINDS[index], blob, name));
    say(`${file.name}: done in ${Math.round(performance.now() - started)} ms`);
  } catch (error) {
    say(`${file.name}: ${error.message}`, true);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  describeModel();
  const input = $("#photo");
  input.addEventListener("change", () => run(input.files[0]));
  const drop = $("#drop");
  ["dragenter", "dragover"].forEach((type) => drop.addEventListener(type, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((type) => drop.addEventListener(type, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    run(event.dataTransfer.files[0]);
  });
});
