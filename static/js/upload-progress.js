// The upload form's progress bar: htmx reports the bytes sent (htmx:xhr:progress).
// A static file, not inline script: the Content-Security-Policy forbids inline code.
document.addEventListener("htmx:xhr:progress", function (event) {
  var form = event.target.closest ? event.target.closest("#upload-form") : null;
  var bar = document.getElementById("upload-bar");
  if (!form || !bar || !event.detail.lengthComputable) {
    return;
  }
  var percent = Math.round((event.detail.loaded / event.detail.total) * 100);
  bar.value = percent;
  bar.setAttribute("aria-valuenow", String(percent));
  bar.textContent = percent + " %";
});
