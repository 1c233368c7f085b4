// The chapter editor and its player (templates/projects/chapter.html).
