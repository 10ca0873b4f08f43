// privguard dashboard: the queries-over-time chart and confirmations. No libraries, no inline
// script (the page's Content-Security-Policy allows scripts from the gateway only).
"use strict";

(function () {
  var COLORS = { answered: "#3b6ea8", refused: "#d98c2b", alerts: "#c0392b", axis: "#666" };

  // Ask before a destructive form (revoke) is sent.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) {
        event.preventDefault();
      }
    });
  });

  var canvas = document.getElementById("chart");
  if (!canvas) {
    return;
  }
  var select = document.getElementById("range");
  var note = document.getElementById("chart-note");

  function label(iso) {
    return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("Z", "") : "";
  }

  function draw(data) {
    var ctx = canvas.getContext("2d");
    var ratio = window.devicePixelRatio || 1;
    var w = canvas.clientWidth || canvas.width;
    var h = canvas.clientHeight || canvas.height;
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    var left = 44, right = 10, top = 12, bottom = 26;
    var n = data.answered.length;
    var plotW = w - left - right, plotH = h - top - bottom;
    var peak = 1;
    for (var i = 0; i < n; i++) {
      peak = Math.max(peak, data.answered[i] + data.refused[i]);
    }
    var bar = plotW / n;
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = COLORS.axis;
    ctx.strokeStyle = "#ccc";
    ctx.beginPath();
    ctx.moveTo(left, top);
    ctx.lineTo(left, top + plotH);
    ctx.lineTo(left + plotW, top + plotH);
    ctx.stroke();
    ctx.textAlign = "right";
    ctx.fillText(String(peak), left - 4, top + 8);
    ctx.fillText("0", left - 4, top + plotH);
    for (i = 0; i < n; i++) {
      var x = left + i * bar;
      var ha = (data.answered[i] / peak) * plotH;
      var hr = (data.refused[i] / peak) * plotH;
      ctx.fillStyle = COLORS.answered;
      ctx.fillRect(x + 1, top + plotH - ha, Math.max(1, bar - 2), ha);
      ctx.fillStyle = COLORS.refused;
      ctx.fillRect(x + 1, top + plotH - ha - hr, Math.max(1, bar - 2), hr);
      if (data.alerts[i] > 0) {
        // a red triangle above the bucket, its count beside it
        ctx.fillStyle = COLORS.alerts;
        ctx.beginPath();
        ctx.moveTo(x + bar / 2, top + 2);
        ctx.lineTo(x + bar / 2 - 5, top - 7);
        ctx.lineTo(x + bar / 2 + 5, top - 7);
        ctx.closePath();
        ctx.fill();
      }
    }
    ctx.fillStyle = COLORS.axis;
    ctx.textAlign = "left";
    ctx.fillText(label(data.start), left, h - 8);
    ctx.textAlign = "right";
    ctx.fillText(label(data.end) + " UTC", left + plotW, h - 8);
    var total = 0, refused = 0, alerts = 0;
    for (i = 0; i < n; i++) {
      total += data.answered[i] + data.refused[i];
      refused += data.refused[i];
      alerts += data.alerts[i];
    }
    note.textContent = total + " request(s), " + refused + " refused, " + alerts +
      " alert(s); " + Math.round(data.bucket_seconds) + " s per bar" +
      (data.truncated ? " (only the newest requests counted)" : "") + ".";
    canvas.setAttribute("data-total", String(total));
    canvas.setAttribute("data-alerts", String(alerts));
  }

  function load() {
    var src = canvas.getAttribute("data-src");
    var url = src + (src.indexOf("?") < 0 ? "?" : "&") + "range=" + encodeURIComponent(select.value);
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) {
          throw new Error("HTTP " + r.status);
        }
        return r.json();
      })
      .then(draw)
      .catch(function (e) {
        note.textContent = "Could not load the chart: " + e.message;
      });
  }

  select.addEventListener("change", load);
  window.setInterval(load, 15000);
  load();
})();
