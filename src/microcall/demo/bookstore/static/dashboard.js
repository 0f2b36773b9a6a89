// The dashboard: polls /dashboard/data every second and draws a small chart by hand.
"use strict";
const history = [];          // {p50, p99, errors} of the browser -> marketplace hop
const HISTORY = 90;
let polls = 0;

function fmt(v) { return v === null || v === undefined ? "\u2014" : v; }

function drawChart() {
  const canvas = document.getElementById("chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 30;
  ctx.clearRect(0, 0, w, h);
  const top = Math.max(50, ...history.map(p => p.p99 || 0)) * 1.1;
  ctx.strokeStyle = "#ccc"; ctx.fillStyle = "#666"; ctx.font = "11px sans-serif";
  for (let i = 0; i <= 4; i++) {
    const y = h - pad - (h - 2 * pad) * i / 4;
    ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w - 5, y); ctx.stroke();
    ctx.fillText(Math.round(top * i / 4), 2, y + 4);
  }
  const x = i => pad + (w - pad - 5) * i / (HISTORY - 1);
  const y = v => h - pad - (h - 2 * pad) * Math.min(v, top) / top;
  for (const [key, colour] of [["p50", "#2a7"], ["p99", "#c33"]]) {
    ctx.strokeStyle = colour; ctx.lineWidth = 2; ctx.beginPath();
    history.forEach((p, i) => { const v = p[key] || 0; i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v)); });
    ctx.stroke();
  }
  ctx.fillStyle = "#f80";
  history.forEach((p, i) => { if (p.errors > 0) ctx.fillRect(x(i) - 2, h - pad - Math.min(p.errors * 5, h - 2 * pad), 4, Math.min(p.errors * 5, h - 2 * pad)); });
  ctx.fillStyle = "#2a7"; ctx.fillText("p50", w - 80, 12); ctx.fillStyle = "#c33"; ctx.fillText("p99", w - 50, 12);
  canvas.dataset.points = String(history.length);
}

async function poll() {
  try {
    const data = await (await fetch("/dashboard/data")).json();
    polls += 1;
    const table = document.getElementById("hops");
    table.querySelectorAll("tr.hop").forEach(row => row.remove());
    for (const hop of data.hops) {
      const row = table.insertRow(); row.className = "hop";
      const cells = [hop.name, hop.up ? hop.rate : "down", fmt(hop.p50_ms), fmt(hop.p99_ms), hop.errors,
                     Math.round(hop.extra_load * 100) + "%", hop.shed];
      for (const value of cells) row.insertCell().textContent = value;
    }
    const page = data.hops[0] || {};
    history.push({p50: page.p50_ms, p99: page.p99_ms, errors: page.errors});
    while (history.length > HISTORY) history.shift();
    const list = document.getElementById("breakers"); list.innerHTML = "";
    for (const [endpoint, state] of Object.entries(data.breakers)) {
      const item = document.createElement("li"); item.className = "state-" + state;
      item.textContent = endpoint + ": " + state; list.appendChild(item);
    }
    document.getElementById("updated").textContent = new Date(data.at * 1000).toLocaleTimeString();
    document.getElementById("polls").textContent = polls;
    drawChart();
  } catch (error) { console.log(error); }
}

document.querySelectorAll("button[data-chaos]").forEach(button => {
  button.addEventListener("click", async () => {
    const row = button.closest("tr");
    const settings = JSON.parse(button.dataset.chaos);
    const answer = await fetch("/dashboard/chaos", {method: "POST", headers: {"Content-Type": "application/json"},
                                body: JSON.stringify({service: row.dataset.service, ...settings})});
    row.querySelector(".chaos-state").textContent = answer.ok ? JSON.stringify(settings) : "failed";
  });
});
setInterval(poll, 1000);
poll();
