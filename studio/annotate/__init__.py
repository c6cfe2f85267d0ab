"""The Annotate page's parts: the keys (``keys``), what each click does (``actions``), the card and
its dialogs (``card``), and the panels around it: dataset switch, end screen, my labels (``panels``)."""
