"""Reading spectra from FITS files and putting them on a common grid."""
