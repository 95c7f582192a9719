// The reading page: answers saved on every change, keyboard shortcuts, and an image viewer
// with zoom, pan and window/level. Plain JavaScript, no build step.
(function () {
  "use strict";
  const app = document.getElementById("app");
  const token = app.dataset.token;
  const caseNo = Number(app.dataset.case), nCases = Number(app.dataset.cases);
  const rows = Array.from(document.querySelectorAll("li.row[data-row]"));
  const message = document.getElementById("message");
  const CATEGORY_KEYS = ["1", "2", "3", "4", "5"];
  const IMPACT_KEYS = {s: "significant", m: "minor", n: "none"};
  let current = 0;

  function state(li) {
    const on = (sel) => Array.from(li.querySelectorAll(sel + ".on"));
    const action = on("[data-action]").map((b) => b.dataset.action)[0] || "";
    return {
      row: li.dataset.row,
      action: action,
      categories: on("[data-category]").map((b) => b.dataset.category),
      impact: on("[data-impact]").map((b) => b.dataset.impact)[0] || "",
      edit: li.querySelector("input.edit").value,
    };
  }

  async function save(li) {
    const body = state(li);
    const status = li.querySelector(".status");
    status.textContent = "saving…";
    try {
      const res = await fetch(`/r/${token}/answer`, {
        method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
      });
      const out = await res.json();
      if (!res.ok) { status.textContent = out.error || "not saved"; li.className = "row open"; return; }
      const problems = out.problems || [];
      status.textContent = problems.length ? problems[0] : "saved";
      li.classList.toggle("done", problems.length === 0);
      li.classList.toggle("open", problems.length > 0);
      document.getElementById("progress").textContent = `${out.progress.done}/${out.progress.total} sentences`;
      li.dataset.saved = String(Date.now());
    } catch (err) {
      status.textContent = "not saved: the server cannot be reached";
    }
  }

  function select(i) {
    if (!rows.length) return;
    current = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach((r, k) => r.classList.toggle("current", k === current));
    rows[current].scrollIntoView({block: "nearest"});
  }

  function setAction(li, action) {
    li.querySelectorAll("[data-action]").forEach((b) => b.classList.toggle("on", b.dataset.action === action));
    if (action === "keep") {  // a kept sentence has no error: clear what an earlier choice left
      li.querySelectorAll("[data-category], [data-impact]").forEach((b) => b.classList.remove("on"));
      li.querySelector("input.edit").value = "";
    }
    if (action === "delete") li.querySelector("input.edit").value = "";
    if (action === "edit") {
      const input = li.querySelector("input.edit");
      if (!input.value) input.value = li.querySelector(".text").textContent.trim();
      input.focus();
    }
    save(li);
  }

  function toggleCategory(li, c) {
    li.querySelector(`[data-category="${c}"]`).classList.toggle("on");
    save(li);
  }

  function setImpact(li, i) {
    li.querySelectorAll("[data-impact]").forEach((b) => b.classList.toggle("on", b.dataset.impact === i));
    save(li);
  }

  rows.forEach((li, k) => {
    li.addEventListener("click", () => select(k));
    li.querySelectorAll("[data-action]").forEach((b) => b.addEventListener("click", () => setAction(li, b.dataset.action)));
    li.querySelectorAll("[data-category]").forEach((b) => b.addEventListener("click", () => toggleCategory(li, b.dataset.category)));
    li.querySelectorAll("[data-impact]").forEach((b) => b.addEventListener("click", () => setImpact(li, b.dataset.impact)));
    const input = li.querySelector("input.edit");
    input.addEventListener("change", () => save(li));
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === "Escape") { ev.preventDefault(); input.blur(); save(li); li.focus(); }
      ev.stopPropagation();
    });
  });

  document.getElementById("finish").addEventListener("click", async () => {
    const res = await fetch(`/r/${token}/finish`, {method: "POST"});
    const out = await res.json();
    message.textContent = out.finished ? "Finished. Thank you." : out.error;
    message.className = out.finished ? "ok" : "todo";
  });

  document.addEventListener("keydown", (ev) => {
    if (ev.target.tagName === "INPUT" && ev.target.type === "text") return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const li = rows[current];
    const key = ev.key;
    let handled = true;
    if (key === "j" || key === "ArrowDown") select(current + 1);
    else if (key === "ArrowUp") select(current - 1);
    else if (key === "]" && caseNo < nCases) location.href = `/r/${token}/case/${caseNo + 1}`;
    else if (key === "[" && caseNo > 1) location.href = `/r/${token}/case/${caseNo - 1}`;
    else if (key === "+" || key === "=") viewer.zoom(1.25);
    else if (key === "-") viewer.zoom(0.8);
    else if (key === "0") viewer.reset();
    else if (!li) handled = false;
    else if (key === "k") setAction(li, "keep");
    else if (key === "e") { ev.preventDefault(); setAction(li, "edit"); }
    else if (key === "d") setAction(li, "delete");
    else if (CATEGORY_KEYS.includes(key)) toggleCategory(li, li.querySelectorAll("[data-category]")[Number(key) - 1].dataset.category);
    else if (key in IMPACT_KEYS) setImpact(li, IMPACT_KEYS[key]);
    else handled = false;
    if (handled) ev.preventDefault();
  });

  // -- image viewer: zoom and pan by transform; window/level on the grey values ----------
  const viewer = (function () {
    const canvas = document.getElementById("canvas");
    const ctx = canvas.getContext("2d");
    const img = new Image();
    let grey = null, scale = 1, dx = 0, dy = 0;
    const win = document.getElementById("window"), lev = document.getElementById("level");
    const off = document.createElement("canvas");

    function render() {
      if (!grey) return;
      const w = Number(win.value), l = Number(lev.value);
      const lo = l - w / 2;
      const out = off.getContext("2d").createImageData(off.width, off.height);
      for (let i = 0, p = 0; i < grey.length; i++, p += 4) {
        const v = Math.max(0, Math.min(255, ((grey[i] - lo) / w) * 255));
        out.data[p] = out.data[p + 1] = out.data[p + 2] = v;
        out.data[p + 3] = 255;
      }
      off.getContext("2d").putImageData(out, 0, 0);
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      const fit = Math.min(canvas.width / off.width, canvas.height / off.height);
      ctx.setTransform(fit * scale, 0, 0, fit * scale, dx, dy);
      ctx.drawImage(off, 0, 0);
    }

    img.onload = function () {
      off.width = img.naturalWidth; off.height = img.naturalHeight;
      const c = off.getContext("2d");
      c.drawImage(img, 0, 0);
      const d = c.getImageData(0, 0, off.width, off.height).data;
      grey = new Uint8ClampedArray(off.width * off.height);
      for (let i = 0; i < grey.length; i++) grey[i] = d[i * 4];
      canvas.dataset.loaded = "1";
      render();
    };
    img.src = canvas.dataset.src;

    function zoom(f, cx, cy) {
      cx = cx === undefined ? canvas.width / 2 : cx; cy = cy === undefined ? canvas.height / 2 : cy;
      dx = cx - (cx - dx) * f; dy = cy - (cy - dy) * f; scale *= f;
      render();
    }
    function reset() { scale = 1; dx = 0; dy = 0; win.value = 255; lev.value = 128; render(); }

    canvas.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      const r = canvas.getBoundingClientRect();
      zoom(ev.deltaY < 0 ? 1.1 : 1 / 1.1, (ev.clientX - r.left) * canvas.width / r.width,
           (ev.clientY - r.top) * canvas.height / r.height);
    }, {passive: false});
    let drag = null;
    canvas.addEventListener("mousedown", (ev) => { drag = {x: ev.clientX, y: ev.clientY, shift: ev.shiftKey}; });
    window.addEventListener("mouseup", () => { drag = null; });
    window.addEventListener("mousemove", (ev) => {
      if (!drag) return;
      const mx = ev.clientX - drag.x, my = ev.clientY - drag.y;
      drag.x = ev.clientX; drag.y = ev.clientY;
      if (drag.shift) {
        win.value = Math.max(1, Math.min(255, Number(win.value) + mx));
        lev.value = Math.max(0, Math.min(255, Number(lev.value) - my));
      } else { dx += mx; dy += my; }
      render();
    });
    win.addEventListener("input", render);
    lev.addEventListener("input", render);
    document.querySelectorAll("[data-zoom]").forEach((b) => b.addEventListener("click", () => zoom(Number(b.dataset.zoom))));
    document.getElementById("reset").addEventListener("click", reset);
    return {zoom: zoom, reset: reset};
  })();

  select(0);
})();
