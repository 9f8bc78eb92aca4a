"""Labels of the localisation references (results.csv `reference`): the data layer tags rows with
them and the tables name them, so both read them from here."""

# COCO-WL rows scored under data.wl_mask=all-objects-published (every object of the image)
PUBLISHED_WL_REFERENCE = "all objects (published COCO-WL)"
