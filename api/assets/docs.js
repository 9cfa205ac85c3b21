// Starts Swagger UI on /docs. A file of its own rather than an inline script, so the page's
// Content-Security-Policy can refuse every inline script.
window.addEventListener("DOMContentLoaded", function () {
  window.SwaggerUIBundle({
    url: "/v1/openapi.json",
    dom_id: "#ui",
    persistAuthorization: true,
  });
});
