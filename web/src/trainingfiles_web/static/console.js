// The console's progressive enhancement; every page works without it but the live
// progress bar. Served from the console itself (Content-Security-Policy: script-src 'self').
"use strict";

function followBuild(section) {
  const bar = document.getElementById("build-progress");
  const percent = document.getElementById("build-percent");
  const stage = document.getElementById("build-stage");
  const failure = document.getElementById("build-error");
  const events = new EventSource(section.dataset.events);
  const show = (data) => {
    bar.value = data.percent;
    bar.textContent = data.percent + " %";
    percent.textContent = data.percent + " %";
    stage.textContent = data.total ? `${data.stage} ${data.done} of ${data.total}` : data.stage;
  };
  events.addEventListener("progress", (e) => show(JSON.parse(e.data)));
  events.addEventListener("done", (e) => {
    events.close();
    const data = JSON.parse(e.data);
    show(data);
    section.classList.add("done");
    // Long enough to see the full bar, then the file's page.
    setTimeout(() => { window.location.assign("/files/" + data.file_id); }, 1200);
  });
  events.addEventListener("failed", (e) => {
    events.close();
    const data = JSON.parse(e.data);
    section.classList.add("failed");
    stage.textContent = "failed";
    failure.textContent = data.message;
    failure.hidden = false;
    document.getElementById("build-hint").textContent =
      "(a failed Create is kept with its reason; an Add leaves the file as it was)";
  });
}

function enhancePicker(form) {
  const target = form.querySelector("#file");
  const nameField = form.querySelector("#name-field");
  const count = form.querySelector("#selected-count");
  const boxes = () => Array.from(form.querySelectorAll("tbody input[name=selected]"));
  const carried = form.querySelectorAll("input[type=hidden][name=selected]").length;
  const toggleName = () => { nameField.hidden = target.value !== ""; };
  const recount = () => {
    count.textContent = `${carried + boxes().filter((b) => b.checked).length} selected`;
  };
  target.addEventListener("change", toggleName);
  toggleName();
  const all = form.querySelector("#select-page");
  if (all && boxes().length) {
    all.hidden = false;
    all.addEventListener("change", () => {
      boxes().forEach((b) => { b.checked = all.checked; });
      recount();
    });
  }
  form.addEventListener("change", recount);
}

document.addEventListener("DOMContentLoaded", () => {
  const build = document.getElementById("build");
  if (build) followBuild(build);
  const picker = document.getElementById("picker");
  if (picker) enhancePicker(picker);
  document.querySelectorAll("select[data-autosubmit]").forEach((select) => {
    select.addEventListener("change", () => select.form.submit());
  });
});
