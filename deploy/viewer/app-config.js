// OHIF 3.13 configuration for the dicomweb archive behind the same nginx (deploy/viewer/nginx.conf).
// Open the viewer with a token once: http://localhost:3000/?token=<dicomweb token --role DOCTOR --subject you>;
// it is kept for the browser tab (sessionStorage) and sent as "Authorization: Bearer ..." with every request.
(function keepToken() {
  // Read when this script loads, before the app starts: kept even if the app changes the URL before reading it.
  const given = new URLSearchParams(window.location.search).get('token');
  if (given) {
    window.sessionStorage.setItem('dicomweb-token', given);
  }
})();

window.config = {
  routerBasename: '/',
  showStudyList: true,
  extensions: [
    {
      id: 'dicomweb-bearer-token',
      preRegistration: ({ servicesManager }) => {
        servicesManager.services.userAuthenticationService.setServiceImplementation({
          getAuthorizationHeader: () => {
            const token = window.sessionStorage.getItem('dicomweb-token');
            return token ? { Authorization: 'Bearer ' + token } : {};
          },
        });
      },
    },
  ],
  modes: [],
  customizationService: { 'ohif.tours': { $set: [] } },
  investigationalUseDialog: { option: 'never' },
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  defaultDataSourceName: 'dicomweb',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'dicomweb',
      configuration: {
        friendlyName: 'dicomweb archive',
        name: 'dicomweb',
        qidoRoot: '/dicomweb',
        wadoRoot: '/dicomweb',
        wadoUriRoot: '/dicomweb/wado',
        qidoSupportsIncludeField: true,
        supportsFuzzyMatching: true,
        supportsWildcard: true,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        omitQuotationForMultipartRequest: true,
        bulkDataURI: { enabled: true },
      },
    },
  ],
};
