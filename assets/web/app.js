// Live panel: polls the device status once a second and refreshes the frame snapshot.
(function () {
  const img = document.getElementById("live-frame");
  const label = document.getElementById("live-label");
  const meta = document.getElementById("live-meta");
  const freeze = document.getElementById("freeze");
  if (!img) return;
  // Refer banner: text and colour, shown only over a current classification.
  let refer = document.getElementById("live-refer");
  if (!refer) {
    refer = document.createElement("p");
    refer.id = "live-refer";
    refer.className = "refer";
    refer.hidden = true;
    label.after(refer);
  }
  let version = -1;
  async function tick() {
    try {
      const r = await fetch("api/v1/status", { credentials: "same-origin" });
      if (r.ok) {
        const s = await r.json();
        const st = s.display;
        if (st) {
          // One message per outcome: class, uncertain, retake (which issue), not_lesion.
          const advice = {
            not_lesion: "Not a skin lesion \u2014 point the camera at the lesion",
            retake: "Retake: " + s.headline,
            uncertain: "Uncertain \u2014 no class is confident enough",
          }[s.outcome] || s.headline;
          label.textContent = advice + (st.frozen ? " (frozen)" : "");
          label.dataset.outcome = s.outcome || "";
          const classes = s.outcome === "class" || s.outcome === "uncertain";
          meta.textContent = (classes ? st.top.map(([n, p]) => n + " " + Math.round(p * 100) + "%").join(" · ") + " | " : "") +
            s.source + " | " + st.fps.toFixed(1) + " fps";
          refer.hidden = !(st.refer && classes);
          refer.textContent = "REFER: a clinician should see this lesion (malignant classes " +
            Math.round(st.malignant_probability * 100) + "%)";
        } else {
          label.textContent = "No live source";
          refer.hidden = true;
        }
        if (s.frame_version !== version && s.frame_version > 0) {
          version = s.frame_version;
          img.src = "api/v1/frame.jpg?v=" + version;
          img.hidden = false;
        }
      }
    } catch (e) { label.textContent = "Device unreachable"; }
    setTimeout(tick, 1000);
  }
  if (freeze) freeze.addEventListener("click", () => fetch("api/v1/freeze", { method: "POST", credentials: "same-origin" }));
  tick();
})();
